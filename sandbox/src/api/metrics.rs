//! `metrics.k8s.io/v1beta1` PodMetrics, as metrics-server serves them:
//! list (namespaced or across namespaces, with a label selector) and get.
//!
//! Owns the wire shape. The figures come from the running server processes
//! ([`crate::usage`]); a pod whose server is not running has no metrics and
//! is left out of a list (404 on get), as metrics-server leaves out pods it
//! has not scraped. Only the main container is reported: the optional
//! sidecar has no process of its own here. Served only when the sandbox
//! runs with `metrics_server`; otherwise the route does not exist.

use serde_json::{json, Value};

use super::{Ctx, Reply};
use crate::meta;
use crate::pod::PodView;
use crate::render;
use crate::selector::Selector;
use crate::state::Sandbox;
use crate::status::ApiError;
use crate::usage;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// Serves `pods` of `metrics.k8s.io/v1beta1`.
pub fn handle(s: &Sandbox, ctx: &Ctx) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    if i.version != VERSION || i.resource != "pods" || !i.subresource.is_empty() {
        return Err(ApiError::no_route());
    }
    let in_ns = i.namespace.is_empty() || i.namespace == s.namespace();
    match i.verb.as_str() {
        "list" => {
            let selector = Selector::parse(ctx.param("labelSelector").unwrap_or_default())
                .map_err(ApiError::bad_request)?;
            let items: Vec<Value> = if in_ns { s.fleet.pods() } else { Vec::new() }
                .iter()
                .filter_map(|p| pod_metrics(s, p))
                .filter(|m| selector.matches_object(m))
                .collect();
            Ok(Reply::Json(
                200,
                json!({"kind": "PodMetricsList", "apiVersion": API_VERSION, "metadata": {}, "items": items}),
            ))
        }
        "get" => s
            .fleet
            .pod(&i.name)
            .filter(|_| in_ns)
            .and_then(|p| pod_metrics(s, &p))
            .map(|m| Reply::Json(200, m))
            .ok_or_else(|| ApiError::not_found(GROUP, "pods", &i.name)),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// One pod's PodMetrics; `None` when its server is not running.
fn pod_metrics(s: &Sandbox, p: &PodView) -> Option<Value> {
    let pid = p.pid.filter(|_| p.running && !p.pending)?;
    let u = usage::of_process(pid)?;
    let pod = render::pod(&s.fleet, p);
    let now = meta::rfc3339(meta::now());
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": {
            "name": p.name,
            "namespace": s.namespace(),
            "creationTimestamp": now,
            "labels": pod["metadata"]["labels"],
        },
        "timestamp": now,
        "window": usage::window(u.window),
        "containers": [{
            "name": s.fleet.options().container(),
            "usage": {
                "cpu": usage::cpu_quantity(u.nanocores),
                "memory": usage::memory_quantity(u.rss_kib),
            },
        }],
    }))
}
