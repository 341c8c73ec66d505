//! The stored resource kinds (Secrets, Leases, Events) and their validation.
//!
//! Owns names, groups and per-kind rules: a Secret's `stringData` merged into
//! base64 `data`, data keys and values validated, `type` defaulted. The
//! generic storage semantics live in [`crate::store`].

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::status::ApiError;

/// A kind kept in the generic object store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Secret.
    Secret,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// core/v1 Event.
    Event,
    /// events.k8s.io/v1 Event.
    EventV1,
}

impl Kind {
    /// All stored kinds.
    pub const ALL: [Kind; 4] = [Kind::Secret, Kind::Lease, Kind::Event, Kind::EventV1];

    /// The API group ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Secret | Kind::Event => "",
            Kind::Lease => "coordination.k8s.io",
            Kind::EventV1 => "events.k8s.io",
        }
    }

    /// `apiVersion` of objects of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Secret | Kind::Event => "v1",
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::EventV1 => "events.k8s.io/v1",
        }
    }

    /// `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::Lease => "Lease",
            Kind::Event | Kind::EventV1 => "Event",
        }
    }

    /// The plural resource name used in URLs and RBAC.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Lease => "leases",
            Kind::Event | Kind::EventV1 => "events",
        }
    }

    /// The kind served at `group`/`resource`.
    pub fn from_route(group: &str, resource: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.resource() == resource)
    }

    /// Applies the kind's defaults and validation to an object about to be stored.
    pub fn normalize(self, obj: &mut Value) -> Result<(), ApiError> {
        match self {
            Kind::Secret => normalize_secret(obj),
            Kind::Lease | Kind::Event | Kind::EventV1 => Ok(()),
        }
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

fn secret_name(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn normalize_secret(obj: &mut Value) -> Result<(), ApiError> {
    let name = secret_name(obj);
    let invalid =
        |field: String, detail: String| ApiError::invalid("Secret", "", &name, &field, &detail);
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("a Secret must be a JSON object"));
    };
    let mut data: Map<String, Value> = match map.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(invalid(
                "data".into(),
                "Invalid value: must be a map of strings".into(),
            ))
        }
    };
    for (k, v) in &data {
        let field = format!("data[{k}]");
        if !valid_key(k) {
            return Err(invalid(field, format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
        }
        let ok = v
            .as_str()
            .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
        if !ok {
            return Err(invalid(
                field,
                "Invalid value: \"<value omitted>\": must be base64-encoded bytes".into(),
            ));
        }
    }
    match map.remove("stringData") {
        None | Some(Value::Null) => {}
        Some(Value::Object(sd)) => {
            for (k, v) in sd {
                let field = format!("stringData[{k}]");
                if !valid_key(&k) {
                    return Err(invalid(field, format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
                }
                let Some(s) = v.as_str() else {
                    return Err(invalid(field, "Invalid value: must be a string".into()));
                };
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(s)),
                );
            }
        }
        Some(_) => {
            return Err(invalid(
                "stringData".into(),
                "Invalid value: must be a map of strings".into(),
            ))
        }
    }
    if !data.is_empty() {
        map.insert("data".into(), Value::Object(data));
    }
    if map
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        map.insert("type".into(), json!("Opaque"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_merged_and_dropped() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"a": "YQ=="}, "stringData": {"b": "bee", "a": "x"}});
        Kind::Secret.normalize(&mut s).unwrap();
        assert_eq!(s["data"], json!({"a": "eA==", "b": "YmVl"}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn non_base64_data_is_invalid() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"a": "not base64!"}});
        let e = Kind::Secret.normalize(&mut s).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert!(e.message.starts_with("Secret \"s\" is invalid: data[a]"));
    }

    #[test]
    fn routes_resolve() {
        assert_eq!(
            Kind::from_route("coordination.k8s.io", "leases"),
            Some(Kind::Lease)
        );
        assert_eq!(
            Kind::from_route("events.k8s.io", "events"),
            Some(Kind::EventV1)
        );
        assert_eq!(Kind::from_route("", "pods"), None);
    }
}
