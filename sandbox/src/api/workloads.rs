//! Namespaces, Pods and the StatefulSet: read views of the fleet, pod
//! deletion (recreated by the StatefulSet) and scaling.
//!
//! Owns the HTTP side only; lifecycle semantics live in [`crate::fleet`].

use serde_json::{json, Value};

use super::objects::field_selector;
use super::{parse_json, require_namespace, Ctx, Reply};
use crate::patch::PatchType;
use crate::render;
use crate::selector::Selector;
use crate::state::Sandbox;
use crate::status::ApiError;
use crate::table;

fn respond_list(
    ctx: &Ctx,
    resource: &str,
    kind: &str,
    api_version: &str,
    items: Vec<Value>,
    rv: &str,
) -> Reply {
    if table::wants_table(ctx.header("accept")) {
        return Reply::Json(200, table::table(resource, &items, rv));
    }
    Reply::Json(200, render::list(kind, api_version, items, rv))
}

fn respond_one(ctx: &Ctx, resource: &str, obj: Value) -> Reply {
    if table::wants_table(ctx.header("accept")) {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return Reply::Json(200, table::table(resource, &[obj], &rv));
    }
    Reply::Json(200, obj)
}

/// Serves namespaces, pods and statefulsets.
pub async fn handle(s: &Sandbox, ctx: &Ctx, body: &[u8]) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    let rv = s.revisions.current().to_string();
    let selector = Selector::parse(ctx.param("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    match (
        i.group.as_str(),
        i.version.as_str(),
        i.resource.as_str(),
        i.subresource.as_str(),
        i.verb.as_str(),
    ) {
        ("", "v1", "namespaces", "", "list") => {
            let items = s
                .namespaces
                .iter()
                .map(|n| render::namespace(n, &s.started))
                .filter(|o| selector.matches_object(o))
                .collect();
            Ok(respond_list(
                ctx,
                "namespaces",
                "Namespace",
                "v1",
                items,
                &rv,
            ))
        }
        ("", "v1", "namespaces", "", "get") => {
            require_namespace(s, &i.name)?;
            Ok(respond_one(
                ctx,
                "namespaces",
                render::namespace(&i.name, &s.started),
            ))
        }
        ("", "v1", "pods", "log", "get") => logs(s, ctx),
        ("", "v1", "pods", "", verb) => pods(s, ctx, verb, &selector, &rv).await,
        ("apps", "v1", "statefulsets", sub, verb) => statefulsets(s, ctx, sub, verb, body).await,
        _ => Err(ApiError::no_route()),
    }
}

/// `pods/NAME/log`: the server's output (`server.log`) for the main container;
/// the sidecar logs nothing. `tailLines` and `limitBytes` are honoured.
fn logs(s: &Sandbox, ctx: &Ctx) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    let opts = s.fleet.options();
    let pod = s
        .fleet
        .pod(&i.name)
        .filter(|_| i.namespace == opts.namespace)
        .ok_or_else(|| ApiError::not_found("", "pods", &i.name))?;
    // The kubelet keeps the current container's log and, with
    // `previous=true`, the one before it.
    let previous = ctx.param("previous").is_some_and(|p| p == "true");
    let instance = || {
        let mut logs = s.fleet.layout(&pod.name).container_logs();
        if previous {
            logs.pop();
            logs.pop().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "previous terminated container \"{}\" in pod \"{}\" not found",
                    opts.container(),
                    pod.name
                ))
            })
        } else {
            Ok(logs.pop().unwrap_or_default())
        }
    };
    let text = match ctx.param("container").filter(|c| !c.is_empty()) {
        None => instance()?,
        Some(c) if c == opts.container() => instance()?,
        Some(c) if opts.sidecar && c == crate::render::SIDECAR => String::new(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.name
            )))
        }
    };
    let mut text = match ctx.param("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut t = lines[lines.len().saturating_sub(n)..].join("\n");
            if !t.is_empty() {
                t.push('\n');
            }
            t
        }
        None => text,
    };
    if let Some(limit) = ctx
        .param("limitBytes")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut cut = limit.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let mut r = http::Response::new(super::full(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(Reply::Raw(r))
}

async fn pods(
    s: &Sandbox,
    ctx: &Ctx,
    verb: &str,
    selector: &Selector,
    rv: &str,
) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    // As the real server: a list in a namespace that does not exist is
    // empty; a named pod there is a 404.
    if !i.namespace.is_empty() && verb != "list" && verb != "watch" {
        require_namespace(s, &i.namespace)?;
    }
    let in_ns = i.namespace.is_empty() || i.namespace == s.namespace();
    match verb {
        "list" => {
            let fields = field_selector(ctx)?;
            let items: Vec<Value> = if in_ns { s.fleet.pods() } else { Vec::new() }
                .iter()
                .map(|p| render::pod(&s.fleet, p))
                .filter(|o| selector.matches_object(o) && fields.matches(o))
                .collect();
            Ok(respond_list(ctx, "pods", "Pod", "v1", items, rv))
        }
        "get" => {
            let p = s
                .fleet
                .pod(&i.name)
                .filter(|_| in_ns)
                .ok_or_else(|| ApiError::not_found("", "pods", &i.name))?;
            Ok(respond_one(ctx, "pods", render::pod(&s.fleet, &p)))
        }
        "delete" => {
            let p = s
                .fleet
                .pod(&i.name)
                .filter(|_| in_ns)
                .ok_or_else(|| ApiError::not_found("", "pods", &i.name))?;
            let deleting = s
                .fleet
                .delete_pod(p.ordinal)
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            Ok(Reply::Json(200, render::pod(&s.fleet, &deleting)))
        }
        "watch" => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn scale_object(s: &Sandbox, rv: u64) -> Value {
    let opts = s.fleet.options();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": opts.name, "namespace": opts.namespace, "uid": s.fleet.uid, "resourceVersion": rv.to_string()},
        "spec": {"replicas": s.fleet.desired()},
        "status": {"replicas": s.fleet.pods().len(), "selector": format!("app.kubernetes.io/name={},app.kubernetes.io/instance={},component=server", opts.flavour.app_name(), opts.name)},
    })
}

async fn statefulsets(
    s: &Sandbox,
    ctx: &Ctx,
    sub: &str,
    verb: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    let opts = s.fleet.options();
    let rv = s.revisions.current();
    let ours = (i.namespace.is_empty() || i.namespace == opts.namespace)
        && (i.name.is_empty() || i.name == opts.name);
    if !i.namespace.is_empty() {
        require_namespace(s, &i.namespace)?;
    }
    if !ours {
        return if i.name.is_empty() {
            Ok(respond_list(
                ctx,
                "statefulsets",
                "StatefulSet",
                "apps/v1",
                Vec::new(),
                &rv.to_string(),
            ))
        } else {
            Err(ApiError::not_found("apps", "statefulsets", &i.name))
        };
    }
    match (sub, verb) {
        ("", "list") => {
            let selector = Selector::parse(ctx.param("labelSelector").unwrap_or_default())
                .map_err(ApiError::bad_request)?;
            let items = vec![render::statefulset(&s.fleet, rv)]
                .into_iter()
                .filter(|o| selector.matches_object(o))
                .collect();
            Ok(respond_list(
                ctx,
                "statefulsets",
                "StatefulSet",
                "apps/v1",
                items,
                &rv.to_string(),
            ))
        }
        ("", "get") => Ok(respond_one(
            ctx,
            "statefulsets",
            render::statefulset(&s.fleet, rv),
        )),
        ("scale", "get") => Ok(Reply::Json(200, scale_object(s, rv))),
        ("" | "scale", "patch" | "update") => {
            let ct = ctx.header("content-type");
            if verb == "patch"
                && !matches!(
                    PatchType::from_content_type(ct),
                    Some(PatchType::Merge | PatchType::StrategicMerge)
                )
            {
                return Err(ApiError::unsupported_media_type(ct));
            }
            let v = parse_json(body)?;
            let replicas = v
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("only spec.replicas can be changed in the sandbox")
                })?;
            s.fleet
                .scale(replicas)
                .await
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            let rv = s.revisions.next();
            if sub == "scale" {
                Ok(Reply::Json(200, scale_object(s, rv)))
            } else {
                Ok(Reply::Json(200, render::statefulset(&s.fleet, rv)))
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
