//! PATCH formats: JSON merge patch, JSON patch, strategic merge (as merge for
//! the kinds stored here) and server-side apply with field ownership.
//!
//! Owns how a patch body turns the current object into the next one and the
//! `managedFields` bookkeeping of apply: a manager's fields it stops applying
//! are removed, and fields another apply manager owns with a different value
//! conflict unless `force`. Storing the result is left to [`crate::store`].

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::kinds::Kind;
use crate::meta;
use crate::status::ApiError;

/// The patch format, from the request's Content-Type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml`.
    Apply,
}

impl PatchType {
    /// Maps a Content-Type (parameters ignored); `None` means 415.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Applies a merge, strategic-merge or JSON patch to `current`.
pub fn apply_patch(
    kind: Kind,
    name: &str,
    ty: &PatchType,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match ty {
        PatchType::Merge | PatchType::StrategicMerge => {
            let p = parse_json(body)?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &p);
        }
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding json patch: {e}")))?;
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::invalid(
                    kind.kind(),
                    kind.group(),
                    name,
                    "",
                    &format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Apply => {
            return Err(ApiError::internal("apply is handled by server_side_apply"))
        }
    }
    Ok(doc)
}

/// Fields that identify an object and are never owned.
const IDENTITY: [&str; 7] = [
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/resourceVersion",
    "/metadata/uid",
    "/metadata/managedFields",
];

fn esc(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn leaf_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                leaf_paths(child, &format!("{prefix}/{}", esc(k)), out);
            }
        }
        _ => {
            if !prefix.is_empty() && !IDENTITY.contains(&prefix) {
                out.insert(prefix.to_string());
            }
        }
    }
}

fn unesc(k: &str) -> String {
    k.replace("~1", "/").replace("~0", "~")
}

/// Paths → FieldsV1 (`{"f:data":{"f:k":{}}}`).
fn to_fields_v1(paths: &BTreeSet<String>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for seg in p.split('/').skip(1) {
            let entry = node
                .entry(format!("f:{}", unesc(seg)))
                .or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                let seg = k.strip_prefix("f:").unwrap_or(k);
                from_fields_v1(child, &format!("{prefix}/{}", esc(seg)), out);
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.to_string());
            }
        }
    }
}

fn apply_managers(obj: &Value) -> Vec<(String, BTreeSet<String>)> {
    let entries = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .filter(|e| e["operation"] == "Apply")
        .filter_map(|e| {
            let mut set = BTreeSet::new();
            from_fields_v1(&e["fieldsV1"], "", &mut set);
            Some((e["manager"].as_str()?.to_string(), set))
        })
        .collect()
}

fn remove_path(obj: &mut Value, path: &str) {
    let Some((parent, last)) = path.rsplit_once('/') else {
        return;
    };
    if let Some(m) = obj.pointer_mut(parent).and_then(Value::as_object_mut) {
        m.remove(&unesc(last));
    }
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let mut node = obj;
    let segs: Vec<String> = path.split('/').skip(1).map(unesc).collect();
    for (i, seg) in segs.iter().enumerate() {
        if !node.is_object() {
            *node = json!({});
        }
        let Some(m) = node.as_object_mut() else {
            return;
        };
        if i + 1 == segs.len() {
            m.insert(seg.clone(), value);
            return;
        }
        node = m.entry(seg.clone()).or_insert_with(|| json!({}));
    }
}

/// Server-side apply of `body` (YAML or JSON) by `manager` onto `current`.
pub fn server_side_apply(
    kind: Kind,
    name: &str,
    current: Option<&Value>,
    body: &[u8],
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let mut applied: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "an applied configuration must be an object",
        ));
    }
    if applied
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| n != name)
    {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    applied["metadata"]["name"] = json!(name);
    kind.normalize(&mut applied)?;
    let mut mine = BTreeSet::new();
    leaf_paths(&applied, "", &mut mine);
    let mut managers = current.map(apply_managers).unwrap_or_default();
    let mut result = current.cloned().unwrap_or_else(|| json!({}));
    let mut conflicts = Vec::new();
    for (m, owned) in managers.iter_mut().filter(|(m, _)| m != manager) {
        for p in mine.intersection(&owned.clone()) {
            if result.pointer(p) != applied.pointer(p) {
                if force {
                    owned.remove(p);
                } else {
                    conflicts.push(format!(
                        "conflict with \"{m}\": .{}",
                        p[1..].replace('/', ".")
                    ));
                }
            }
        }
    }
    if !conflicts.is_empty() {
        let mut e = ApiError::conflict(kind.group(), kind.resource(), name);
        e.message = format!(
            "Apply failed with {} conflict(s): {}",
            conflicts.len(),
            conflicts.join("; ")
        );
        return Err(e);
    }
    let previous = managers
        .iter()
        .find(|(m, _)| m == manager)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let others: BTreeSet<String> = managers
        .iter()
        .filter(|(m, _)| m != manager)
        .flat_map(|(_, s)| s.clone())
        .collect();
    for p in previous.difference(&mine).filter(|p| !others.contains(*p)) {
        remove_path(&mut result, p);
    }
    for p in &mine {
        if let Some(v) = applied.pointer(p) {
            set_path(&mut result, p, v.clone());
        }
    }
    if let Some(rv) = applied.pointer("/metadata/resourceVersion") {
        result["metadata"]["resourceVersion"] = rv.clone();
    } else if let Some(m) = result["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    managers.retain(|(m, _)| m != manager);
    managers.push((manager.to_string(), mine));
    let now = meta::rfc3339(meta::now());
    let entries: Vec<Value> = managers
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(m, s)| json!({"manager": m, "operation": "Apply", "apiVersion": kind.api_version(), "time": now, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(s)}))
        .collect();
    result["metadata"]["managedFields"] = Value::Array(entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let cur = json!({"metadata": {"name": "s"}, "data": {"a": "YQ=="}});
        let body =
            br#"[{"op":"test","path":"/data/a","value":"Yg=="},{"op":"remove","path":"/data/a"}]"#;
        let e = apply_patch(Kind::Secret, "s", &PatchType::Json, &cur, body).unwrap_err();
        assert_eq!(e.code, 422);
        let body =
            br#"[{"op":"test","path":"/data/a","value":"YQ=="},{"op":"remove","path":"/data/a"}]"#;
        let out = apply_patch(Kind::Secret, "s", &PatchType::Json, &cur, body).unwrap();
        assert_eq!(out["data"], json!({}));
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped_and_keeps_others() {
        let a = server_side_apply(
            Kind::Secret,
            "s",
            None,
            b"metadata: {name: s}\nstringData: {a: x, b: y}\n",
            "m1",
            false,
        )
        .unwrap();
        assert_eq!(a["data"], json!({"a": "eA==", "b": "eQ=="}));
        let b = server_side_apply(
            Kind::Secret,
            "s",
            Some(&a),
            b"metadata: {name: s}\ndata: {c: eg==}\n",
            "m2",
            false,
        )
        .unwrap();
        let c = server_side_apply(
            Kind::Secret,
            "s",
            Some(&b),
            b"metadata: {name: s}\nstringData: {a: x}\n",
            "m1",
            false,
        )
        .unwrap();
        assert_eq!(c["data"], json!({"a": "eA==", "c": "eg=="}));
    }

    #[test]
    fn apply_conflicts_without_force() {
        let a = server_side_apply(
            Kind::Secret,
            "s",
            None,
            b"metadata: {name: s}\ndata: {a: eA==}\n",
            "m1",
            false,
        )
        .unwrap();
        let e = server_side_apply(
            Kind::Secret,
            "s",
            Some(&a),
            b"metadata: {name: s}\ndata: {a: eQ==}\n",
            "m2",
            false,
        )
        .unwrap_err();
        assert_eq!(e.code, 409);
        let ok = server_side_apply(
            Kind::Secret,
            "s",
            Some(&a),
            b"metadata: {name: s}\ndata: {a: eQ==}\n",
            "m2",
            true,
        )
        .unwrap();
        assert_eq!(ok["data"]["a"], "eQ==");
    }

    #[test]
    fn content_types_map() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }
}
