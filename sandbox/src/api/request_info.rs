//! What a request is about, the way the real API server's RequestInfo sees it:
//! group, version, namespace, resource, name, subresource and verb.
//!
//! Owns path parsing only; authorization, audit and routing consume the result.

use http::Method;

/// The parsed target of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path names a resource (`/api/v1/...`, `/apis/g/v/...`).
    pub is_resource: bool,
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Plural resource name.
    pub resource: String,
    /// Object name ("" for collections).
    pub name: String,
    /// Subresource (`exec`, `portforward`, `status`, ...).
    pub subresource: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
}

impl RequestInfo {
    /// The resource as RBAC names it: `pods/exec`.
    pub fn rbac_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Parses `path` (without query) for `method`; `watch` is the `watch=` query flag.
pub fn parse(method: &Method, path: &str, watch: bool) -> RequestInfo {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let non_resource = RequestInfo {
        verb: method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let (group, version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return non_resource,
    };
    let mut info = RequestInfo {
        is_resource: true,
        group: group.to_string(),
        version: version.to_string(),
        ..RequestInfo::default()
    };
    let rest: &[&str] = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => {
            info.namespace = ns.to_string();
            tail
        }
        other => other,
    };
    if let Some(r) = rest.first() {
        info.resource = r.to_string();
    }
    if let Some(n) = rest.get(1) {
        info.name = n.to_string();
    }
    if let Some(s) = rest.get(2) {
        info.subresource = s.to_string();
    }
    if info.resource == "namespaces" && !info.name.is_empty() {
        info.namespace = info.name.clone();
    }
    let named = !info.name.is_empty();
    info.verb = match (method.as_str(), named) {
        _ if matches!(info.subresource.as_str(), "exec" | "portforward" | "attach") => "create",
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => {
            return RequestInfo {
                verb: m.to_ascii_lowercase(),
                ..info
            }
        }
    }
    .to_string();
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_named_subresource() {
        let i = parse(
            &Method::GET,
            "/api/v1/namespaces/vault/pods/openbao-0/exec",
            false,
        );
        assert_eq!(
            (i.group.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("", "vault", "pods")
        );
        assert_eq!(
            (i.name.as_str(), i.subresource.as_str(), i.verb.as_str()),
            ("openbao-0", "exec", "create")
        );
        assert_eq!(i.rbac_resource(), "pods/exec");
    }

    #[test]
    fn verbs_and_groups() {
        let i = parse(
            &Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/vault/leases/l",
            false,
        );
        assert_eq!(
            (i.group.as_str(), i.resource.as_str(), i.verb.as_str()),
            ("coordination.k8s.io", "leases", "update")
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/namespaces/vault/secrets", false).verb,
            "list"
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/namespaces/vault/secrets", true).verb,
            "watch"
        );
        let ns = parse(&Method::GET, "/api/v1/namespaces/vault", false);
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_str(), ns.verb.as_str()),
            ("namespaces", "vault", "get")
        );
        assert!(!parse(&Method::GET, "/api/v1", false).is_resource);
        assert!(!parse(&Method::GET, "/version", false).is_resource);
    }
}
