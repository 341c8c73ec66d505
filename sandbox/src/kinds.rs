//! The stored resource kinds (Secrets, Leases, Events, Services) and their
//! validation.
//!
//! Owns names, groups and per-kind rules: a Secret's `stringData` merged into
//! base64 `data`, data keys and values validated, `type` defaulted; a
//! Service's `type` defaulted and an ExternalName Service's `externalName`
//! checked to be a DNS name (what clients of another cluster are switched
//! through). The
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
    /// core/v1 Service: stored only (no endpoints, no proxying).
    Service,
}

impl Kind {
    /// All stored kinds.
    pub const ALL: [Kind; 5] = [
        Kind::Secret,
        Kind::Lease,
        Kind::Event,
        Kind::EventV1,
        Kind::Service,
    ];

    /// The API group ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Secret | Kind::Event | Kind::Service => "",
            Kind::Lease => "coordination.k8s.io",
            Kind::EventV1 => "events.k8s.io",
        }
    }

    /// `apiVersion` of objects of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Secret | Kind::Event | Kind::Service => "v1",
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
            Kind::Service => "Service",
        }
    }

    /// The plural resource name used in URLs and RBAC.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Lease => "leases",
            Kind::Event | Kind::EventV1 => "events",
            Kind::Service => "services",
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
        validate_meta(self, obj)?;
        match self {
            Kind::Secret => normalize_secret(obj),
            Kind::Service => normalize_service(obj),
            Kind::Lease | Kind::Event | Kind::EventV1 => Ok(()),
        }
    }

    /// Rules comparing the stored object with its replacement: a Secret's
    /// `type` never changes; an `immutable` Secret keeps its data.
    pub fn check_update(self, old: &Value, new: &Value) -> Result<(), ApiError> {
        if self != Kind::Secret {
            return Ok(());
        }
        let name = secret_name(new);
        if old.get("type") != new.get("type") {
            let t = new.get("type").and_then(Value::as_str).unwrap_or_default();
            return Err(ApiError::invalid(
                "Secret",
                "",
                &name,
                "type",
                &format!("Invalid value: {t:?}: field is immutable"),
            ));
        }
        if old.get("immutable") == Some(&Value::Bool(true))
            && (old.get("data") != new.get("data")
                || new.get("immutable") != Some(&Value::Bool(true)))
        {
            return Err(ApiError::invalid(
                "Secret",
                "",
                &name,
                "data",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
        Ok(())
    }
}

/// A lowercase RFC 1123 subdomain: what object names must be.
fn valid_name(n: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    n.len() <= 253
        && n.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(alnum)
                && part.ends_with(alnum)
                && part.chars().all(|c| alnum(c) || c == '-')
        })
}

/// Label values: at most 63 characters of `[-_.A-Za-z0-9]`, alphanumeric at both ends.
fn valid_label_value(v: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(alnum)
            && v.ends_with(alnum)
            && v.chars().all(|c| alnum(c) || "-_.".contains(c)))
}

/// Label keys: an optional DNS-subdomain prefix and `/`, then a name like a value.
fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = k.rsplit_once('/').map_or((None, k), |(p, n)| (Some(p), n));
    prefix.is_none_or(valid_name) && !name.is_empty() && valid_label_value(name)
}

fn validate_meta(kind: Kind, obj: &Value) -> Result<(), ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invalid = |field: &str, detail: String| {
        ApiError::invalid(kind.kind(), kind.group(), name, field, &detail)
    };
    if !valid_name(name) {
        return Err(invalid("metadata.name", format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
    }
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    for (k, v) in labels.into_iter().flatten() {
        if !valid_label_key(k) {
            return Err(invalid("metadata.labels", format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'")));
        }
        if !v.as_str().is_some_and(valid_label_value) {
            return Err(invalid("metadata.labels", format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
        }
    }
    Ok(())
}

/// A Service's `spec.type` defaults to ClusterIP; an ExternalName Service
/// needs `spec.externalName`, a lowercase RFC 1123 name (no scheme, no port).
fn normalize_service(obj: &mut Value) -> Result<(), ApiError> {
    let name = secret_name(obj);
    let invalid =
        |field: &str, detail: String| ApiError::invalid("Service", "", &name, field, &detail);
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("a Service must be a JSON object"));
    };
    let spec = map.entry("spec").or_insert_with(|| json!({}));
    let Some(spec) = spec.as_object_mut() else {
        return Err(invalid("spec", "Invalid value: must be an object".into()));
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP")
        .to_owned();
    if !matches!(
        ty.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(invalid(
            "spec.type",
            format!("Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        ));
    }
    spec.insert("type".into(), json!(ty));
    if ty == "ExternalName" {
        let external = spec
            .get("externalName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if external.is_empty() {
            return Err(invalid("spec.externalName", "Required value".into()));
        }
        if !valid_name(external.trim_end_matches('.')) {
            return Err(invalid("spec.externalName", format!("Invalid value: {external:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
        }
    }
    Ok(())
}

/// The API server's limit on a Secret's decoded data.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

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
    let size: usize = data
        .values()
        .filter_map(Value::as_str)
        .filter_map(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .map(|b| b.len())
        .sum();
    if size > MAX_SECRET_BYTES {
        return Err(invalid(
            "data".into(),
            format!("Too long: must have at most {MAX_SECRET_BYTES} bytes"),
        ));
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
    fn names_labels_and_size_are_validated() {
        let mut bad = json!({"metadata": {"name": "Bad_Name"}});
        assert_eq!(Kind::Lease.normalize(&mut bad).unwrap_err().code, 422);
        let mut ok = json!({"metadata": {"name": "openbao-0.17a", "labels": {"app.kubernetes.io/name": "openbao", "e": ""}}});
        Kind::Event.normalize(&mut ok).unwrap();
        let mut bad_label = json!({"metadata": {"name": "x", "labels": {"a": "-nope"}}});
        assert!(Kind::Lease.normalize(&mut bad_label).is_err());
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_SECRET_BYTES + 1]);
        let mut huge = json!({"metadata": {"name": "x"}, "data": {"k": big}});
        assert!(Kind::Secret
            .normalize(&mut huge)
            .unwrap_err()
            .message
            .contains("Too long"));
    }

    #[test]
    fn immutable_secrets_keep_data_and_type() {
        let old = json!({"metadata": {"name": "s"}, "type": "Opaque", "immutable": true, "data": {"a": "YQ=="}});
        let mut new = old.clone();
        Kind::Secret.check_update(&old, &new).unwrap();
        new["data"]["a"] = json!("Yg==");
        assert_eq!(Kind::Secret.check_update(&old, &new).unwrap_err().code, 422);
        let mut retyped = old.clone();
        retyped["type"] = json!("kubernetes.io/tls");
        assert!(Kind::Secret.check_update(&old, &retyped).is_err());
    }

    #[test]
    fn external_name_services_need_a_dns_name() {
        let mut svc = json!({"metadata": {"name": "vault"}, "spec": {"type": "ExternalName", "externalName": "vault.vault.svc.cluster.local"}});
        Kind::Service.normalize(&mut svc).unwrap();
        let mut plain = json!({"metadata": {"name": "vault"}});
        Kind::Service.normalize(&mut plain).unwrap();
        assert_eq!(plain["spec"]["type"], "ClusterIP");
        for bad in ["", "https://vault.example:8200", "Vault.example"] {
            let mut svc = json!({"metadata": {"name": "vault"}, "spec": {"type": "ExternalName", "externalName": bad}});
            let e = Kind::Service.normalize(&mut svc).unwrap_err();
            assert_eq!(e.code, 422, "{bad}");
            assert!(e.message.contains("spec.externalName"), "{}", e.message);
        }
        let mut odd = json!({"metadata": {"name": "vault"}, "spec": {"type": "Headless"}});
        assert_eq!(Kind::Service.normalize(&mut odd).unwrap_err().code, 422);
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
        assert_eq!(Kind::from_route("", "services"), Some(Kind::Service));
        assert_eq!(Kind::from_route("", "pods"), None);
    }
}
