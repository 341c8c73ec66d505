//! Discovery documents: `/version`, `/api`, `/apis`, and one APIResourceList
//! per group version, as plain (non-aggregated) JSON.
//!
//! Owns which resources, verbs and subresources the sandbox advertises;
//! `metrics.k8s.io/v1beta1` only when the sandbox serves it, as a cluster
//! lists that group only while metrics-server is installed.

use serde_json::{json, Value};

const GROUPS: [(&str, &str); 3] = [
    ("apps", "v1"),
    ("coordination.k8s.io", "v1"),
    ("events.k8s.io", "v1"),
];

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "37", "emulationMajor": "1", "emulationMinor": "37",
        "gitVersion": "v1.37.1", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-10-01T00:00:00Z",
        "goVersion": "go1.25.4", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `/apis`; `metrics` adds `metrics.k8s.io/v1beta1`.
pub fn groups(metrics: bool) -> Value {
    let served = metrics.then_some((super::metrics::GROUP, super::metrics::VERSION));
    let groups: Vec<Value> = GROUPS
        .iter()
        .copied()
        .chain(served)
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn res(name: &str, singular: &str, kind: &str, verbs: &[&str], short: &[&str]) -> Value {
    let mut r = json!({"name": name, "singularName": singular, "namespaced": name != "namespaces", "kind": kind, "verbs": verbs});
    if !short.is_empty() {
        r["shortNames"] = json!(short);
    }
    if matches!(name, "pods" | "statefulsets") {
        r["categories"] = json!(["all"]);
    }
    r
}

const CRUD: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api/v1` or `/apis/{group}/{version}`; `None` for unknown group versions
/// (and for `metrics.k8s.io/v1beta1` unless `metrics`).
pub fn resources(group: &str, version: &str, metrics: bool) -> Option<Value> {
    let (gv, resources) = match (group, version) {
        ("", "v1") => (
            "v1".to_string(),
            vec![
                res(
                    "namespaces",
                    "namespace",
                    "Namespace",
                    &["get", "list"],
                    &["ns"],
                ),
                res("pods", "pod", "Pod", &["delete", "get", "list"], &["po"]),
                res("pods/log", "", "Pod", &["get"], &[]),
                res("pods/exec", "", "PodExecOptions", &["create", "get"], &[]),
                res(
                    "pods/portforward",
                    "",
                    "PodPortForwardOptions",
                    &["create", "get"],
                    &[],
                ),
                res("secrets", "secret", "Secret", &CRUD, &[]),
                res("events", "event", "Event", &CRUD, &["ev"]),
                res("services", "service", "Service", &CRUD, &["svc"]),
            ],
        ),
        (super::metrics::GROUP, super::metrics::VERSION) if metrics => (
            format!("{group}/{version}"),
            vec![res("pods", "", "PodMetrics", &["get", "list"], &[])],
        ),
        ("apps", "v1") => (
            "apps/v1".to_string(),
            vec![
                res(
                    "statefulsets",
                    "statefulset",
                    "StatefulSet",
                    &["get", "list", "patch"],
                    &["sts"],
                ),
                res(
                    "statefulsets/scale",
                    "",
                    "Scale",
                    &["get", "patch", "update"],
                    &[],
                ),
            ],
        ),
        ("coordination.k8s.io", "v1") => (
            "coordination.k8s.io/v1".to_string(),
            vec![res("leases", "lease", "Lease", &CRUD, &[])],
        ),
        ("events.k8s.io", "v1") => (
            "events.k8s.io/v1".to_string(),
            vec![res("events", "event", "Event", &CRUD, &["ev"])],
        ),
        _ => return None,
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
