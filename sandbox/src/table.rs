//! `meta.k8s.io/v1` Table rendering for `kubectl get` (`Accept: ...;as=Table`).
//!
//! Owns the columns kubectl prints per resource: pods (NAME READY STATUS
//! RESTARTS AGE), secrets (NAME TYPE DATA AGE), statefulsets, leases,
//! namespaces, and NAME AGE for anything else.

use serde_json::{json, Value};

use crate::meta;

/// Whether the client asked for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn col(name: &str, ty: &str, format: &str, priority: u8) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
}

fn age_of(obj: &Value) -> String {
    obj.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(meta::parse_time)
        .map(meta::age)
        .unwrap_or_else(|| "<unknown>".into())
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: u64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_u64())
        .sum();
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{ready}/{}", statuses.len())),
        json!(s(o, "/status/phase")),
        json!(restarts.to_string()),
        json!(age_of(o)),
        json!(s(o, "/status/podIP")),
        json!(s(o, "/spec/nodeName")),
    ]
}

/// Renders the cells of one row.
type CellsFn = dyn Fn(&Value) -> Vec<Value>;

/// A Table of `items` (already filtered) for `resource`.
pub fn table(resource: &str, items: &[Value], revision: &str) -> Value {
    let name = col("Name", "string", "name", 0);
    let age = col("Age", "string", "", 0);
    let (columns, cells): (Vec<Value>, Box<CellsFn>) = match resource {
        "pods" => (
            vec![
                name,
                col("Ready", "string", "", 0),
                col("Status", "string", "", 0),
                col("Restarts", "string", "", 0),
                age,
                col("IP", "string", "", 1),
                col("Node", "string", "", 1),
            ],
            Box::new(pod_cells),
        ),
        "secrets" => (
            vec![
                name,
                col("Type", "string", "", 0),
                col("Data", "string", "", 0),
                age,
            ],
            Box::new(|o: &Value| {
                let n = o
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/type")),
                    json!(n.to_string()),
                    json!(age_of(o)),
                ]
            }),
        ),
        "statefulsets" => (
            vec![name, col("Ready", "string", "", 0), age],
            Box::new(|o: &Value| {
                let ready = o
                    .pointer("/status/readyReplicas")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let want = o
                    .pointer("/spec/replicas")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!("{ready}/{want}")),
                    json!(age_of(o)),
                ]
            }),
        ),
        "leases" => (
            vec![name, col("Holder", "string", "", 0), age],
            Box::new(|o: &Value| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/spec/holderIdentity")),
                    json!(age_of(o)),
                ]
            }),
        ),
        "namespaces" => (
            vec![name, col("Status", "string", "", 0), age],
            Box::new(|o: &Value| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/status/phase")),
                    json!(age_of(o)),
                ]
            }),
        ),
        _ => (
            vec![name, age],
            Box::new(|o: &Value| vec![json!(s(o, "/metadata/name")), json!(age_of(o))]),
        ),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(o),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision},
        "columnDefinitions": columns, "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_rows_count_data_keys() {
        let t = table(
            "secrets",
            &[json!({"metadata": {"name": "a"}, "type": "Opaque", "data": {"x": "", "y": ""}})],
            "5",
        );
        assert_eq!(
            t["rows"][0]["cells"].as_array().unwrap()[..3],
            [json!("a"), json!("Opaque"), json!("2")]
        );
        assert_eq!(t["columnDefinitions"][1]["name"], "Type");
    }

    #[test]
    fn table_requested_only_when_first_choice() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
