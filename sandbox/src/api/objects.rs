//! HTTP verbs on the stored kinds (Secrets, Leases, Events): list, get,
//! create, replace, patch (four formats), delete, and injected Secret write
//! failures.
//!
//! Owns the mapping from request to [`crate::store::Store`] calls and the
//! wire shapes (lists, tables, delete Status). Semantics live in the store.

use serde_json::Value;

use super::{parse_json, require_namespace, Ctx, Reply};
use crate::faults::SecretFault;
use crate::kinds::Kind;
use crate::patch::{self, PatchType};
use crate::protobuf;
use crate::render;
use crate::selector::{FieldSelector, Selector};
use crate::state::Sandbox;
use crate::status::{self, ApiError};
use crate::store::Write;
use crate::table;

fn selector(ctx: &Ctx) -> Result<Selector, ApiError> {
    Selector::parse(ctx.param("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)
}

/// The request's `fieldSelector`.
pub fn field_selector(ctx: &Ctx) -> Result<FieldSelector, ApiError> {
    FieldSelector::parse(ctx.param("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)
}

fn injected_fault(s: &Sandbox, kind: Kind, name: &str) -> Option<Result<Reply, ApiError>> {
    if kind != Kind::Secret {
        return None;
    }
    Some(match s.faults.take_secret_write_fault(name)? {
        SecretFault::ServerError => Err(ApiError::internal(format!(
            "injected failure writing secret {name:?}"
        ))),
        SecretFault::Conflict => Err(ApiError::conflict("", "secrets", name)),
        SecretFault::DropConnection => Ok(Reply::Drop),
    })
}

/// Serves one request on a stored kind.
pub fn handle(s: &Sandbox, ctx: &Ctx, kind: Kind, body: &[u8]) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    let ns = i.namespace.as_str();
    if !i.subresource.is_empty() {
        return Err(ApiError::no_route());
    }
    if !ns.is_empty() {
        require_namespace(s, ns)?;
    }
    let write_target = match i.verb.as_str() {
        "create" => decode_body(ctx, kind, body).ok().and_then(|v| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        }),
        "update" | "patch" | "delete" => Some(i.name.clone()),
        _ => None,
    };
    if let Some(fault) = write_target.and_then(|name| injected_fault(s, kind, &name)) {
        return fault;
    }
    let ok = |v: Value| Ok(Reply::Json(200, v));
    let dry = ctx.param("dryRun") == Some("All");
    match i.verb.as_str() {
        "list" => {
            let (mut items, rv) =
                s.store
                    .list(kind, (!ns.is_empty()).then_some(ns), &selector(ctx)?);
            let fields = field_selector(ctx)?;
            items.retain(|o| fields.matches(o));
            if table::wants_table(ctx.header("accept")) {
                return ok(table::table(kind.resource(), &items, &rv));
            }
            ok(render::list(kind.kind(), kind.api_version(), items, &rv))
        }
        "watch" => Err(ApiError::method_not_allowed()),
        "get" => {
            let obj = s.store.get(kind, ns, &i.name)?;
            if table::wants_table(ctx.header("accept")) {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                return ok(table::table(kind.resource(), &[obj], &rv));
            }
            ok(obj)
        }
        "create" => {
            let obj = s.store.create(
                kind,
                ns,
                decode_body(ctx, kind, body)?,
                dry,
                &field_manager(ctx),
            )?;
            Ok(Reply::Json(201, obj))
        }
        "update" => ok(s.store.replace(
            kind,
            ns,
            &i.name,
            decode_body(ctx, kind, body)?,
            dry,
            &field_manager(ctx),
        )?),
        "patch" => {
            let ct = ctx.header("content-type");
            let ty = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            if ty == PatchType::Apply {
                let manager = ctx
                    .param("fieldManager")
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "PATCH, fieldManager: Required value: is required for apply patch",
                        )
                    })?;
                let force = ctx.param("force") == Some("true");
                let existed = s.store.get(kind, ns, &i.name).is_ok();
                let obj = s.store.write(
                    kind,
                    ns,
                    &i.name,
                    Write {
                        create_if_absent: true,
                        dry_run: dry,
                        manager: None,
                    },
                    |cur| patch::server_side_apply(kind, &i.name, cur, body, manager, force),
                )?;
                return Ok(Reply::Json(if existed { 200 } else { 201 }, obj));
            }
            let obj = s.store.write(
                kind,
                ns,
                &i.name,
                Write {
                    create_if_absent: false,
                    dry_run: dry,
                    manager: Some(&field_manager(ctx)),
                },
                |cur| match cur {
                    Some(cur) => patch::apply_patch(kind, &i.name, &ty, cur, body),
                    None => Err(ApiError::not_found(kind.group(), kind.resource(), &i.name)),
                },
            )?;
            ok(obj)
        }
        "delete" => {
            let precondition = if body.is_empty() {
                None
            } else {
                parse_json(body)?
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let gone = s
                .store
                .delete(kind, ns, &i.name, precondition.as_deref(), dry)?;
            let uid = gone
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ok(status::success(kind.group(), kind.resource(), &i.name, uid))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// `fieldManager`, or like the real server the User-Agent up to its first `/`.
fn field_manager(ctx: &Ctx) -> String {
    match ctx.param("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => {
            let ua = ctx.header("user-agent");
            let prefix = ua.split('/').next().unwrap_or_default().trim();
            if prefix.is_empty() {
                "unknown".to_string()
            } else {
                prefix.chars().take(128).collect()
            }
        }
    }
}

/// The object in a create/update body: JSON, or a protobuf Secret (what
/// `kubectl create secret generic` sends); other encodings are 415.
fn decode_body(ctx: &Ctx, kind: Kind, body: &[u8]) -> Result<Value, ApiError> {
    let ct = ctx.header("content-type");
    match ct.split(';').next().unwrap_or_default().trim() {
        "" | "application/json" | "*/*" => parse_json(body),
        "application/vnd.kubernetes.protobuf" if kind == Kind::Secret => {
            protobuf::decode_secret(body).ok_or_else(|| {
                ApiError::bad_request("unable to decode the protobuf body as a v1 Secret")
            })
        }
        _ => Err(ApiError::unsupported_media_type(ct)),
    }
}
