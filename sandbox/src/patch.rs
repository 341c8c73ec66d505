//! PATCH formats: JSON merge patch, JSON patch, strategic merge (as merge for
//! the kinds stored here) and server-side apply with field ownership.
//!
//! Owns how a patch body turns the current object into the next one and the
//! `managedFields` bookkeeping of apply: a manager's fields it stops applying
//! are removed, and fields another apply manager owns with a different value
//! conflict unless `force`. Storing the result is left to [`crate::store`].

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::kinds::Kind;
use crate::managed;
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
    let mine = managed::leaf_paths(&applied);
    let mut entries = current.map(managed::read).unwrap_or_default();
    let mut result = current
        .cloned()
        .unwrap_or_else(|| json!({"metadata": {"name": name}}));
    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| e.manager != manager) {
        for p in mine.intersection(&e.fields.clone()) {
            if result.pointer(p) != applied.pointer(p) {
                if force {
                    e.fields.remove(p);
                } else {
                    conflicts.push(format!(
                        "conflict with \"{}\": .{}",
                        e.manager,
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
    let mine_before = entries
        .iter()
        .find(|e| e.apply && e.manager == manager)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<String> = entries
        .iter()
        .filter(|e| !(e.apply && e.manager == manager))
        .flat_map(|e| e.fields.clone())
        .collect();
    for p in mine_before
        .difference(&mine)
        .filter(|p| !others.contains(*p))
    {
        managed::remove_path(&mut result, p);
    }
    for p in &mine {
        if let Some(v) = applied.pointer(p) {
            managed::set_path(&mut result, p, v.clone());
        }
    }
    if let Some(rv) = applied.pointer("/metadata/resourceVersion") {
        result["metadata"]["resourceVersion"] = rv.clone();
    } else if let Some(m) = result["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    entries.retain(|e| !(e.apply && e.manager == manager));
    entries.push(managed::Entry {
        manager: manager.to_string(),
        apply: true,
        fields: mine,
    });
    managed::write(&mut result, entries, kind.api_version());
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
