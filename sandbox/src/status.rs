//! `metav1.Status` errors the way the real API server words them.
//!
//! Owns the wording, reason and code of every failure the sandbox returns;
//! handlers build an [`ApiError`] and the server renders it.

use serde_json::{json, Value};

/// An API failure, rendered as a `metav1.Status` body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `reason` (NotFound, AlreadyExists, Conflict, Invalid, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details`, if any.
    pub details: Option<Value>,
}

/// `secrets "x"` or `leases.coordination.k8s.io "x"`.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(group: &str, resource: &str, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": resource });
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    fn new(
        code: u16,
        reason: &'static str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details,
        }
    }

    /// 404 `secrets "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", qualified(group, resource));
        Self::new(404, "NotFound", msg, Some(details(group, resource, name)))
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    /// 409 `secrets "x" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} \"{name}\" already exists", qualified(group, resource));
        Self::new(
            409,
            "AlreadyExists",
            msg,
            Some(details(group, resource, name)),
        )
    }

    /// 409 optimistic-concurrency conflict.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(group, resource)
        );
        Self::new(409, "Conflict", msg, Some(details(group, resource, name)))
    }

    /// 409 precondition failure on delete.
    pub fn precondition_failed(
        group: &str,
        resource: &str,
        name: &str,
        want: &str,
        have: &str,
    ) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}",
            qualified(group, resource)
        );
        Self::new(409, "Conflict", msg, Some(details(group, resource, name)))
    }

    /// 422 `Secret "x" is invalid: field: Invalid value: ...`.
    pub fn invalid(kind: &str, group: &str, name: &str, field: &str, detail: &str) -> Self {
        let msg = if field.is_empty() {
            format!("{kind} \"{name}\" is invalid: {detail}")
        } else {
            format!("{kind} \"{name}\" is invalid: {field}: {detail}")
        };
        let mut d = json!({
            "name": name, "kind": kind,
            "causes": [{ "reason": "FieldValueInvalid", "message": detail, "field": field }],
        });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        Self::new(422, "Invalid", msg, Some(d))
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )
    }

    /// 415 for an unsupported patch or body content type.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type:?}"), None)
    }

    /// 403 with the real RBAC wording.
    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        name: &str,
        ns: &str,
    ) -> Self {
        let full = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        let subject = if name.is_empty() {
            qualified(group, resource)
        } else {
            format!("{} \"{name}\"", qualified(group, resource))
        };
        let scope = if ns.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{ns}\"")
        };
        let msg = format!("{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{full}\" in API group \"{group}\" {scope}");
        let mut d = json!({ "name": name, "kind": resource });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        Self::new(403, "Forbidden", msg, Some(d))
    }

    /// 401 for a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized", None)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        let msg = format!("Internal error occurred: {message}");
        Self::new(
            500,
            "InternalError",
            msg,
            Some(json!({ "causes": [{ "message": message }] })),
        )
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The body of a successful delete.
pub fn success(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    let mut d = details(group, resource, name);
    d["uid"] = json!(uid);
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_matches_the_api_server_wording() {
        let e = ApiError::forbidden("sandbox-admin", "get", "", "secrets", "", "x", "vault");
        assert_eq!(
            e.message,
            "secrets \"x\" is forbidden: User \"sandbox-admin\" cannot get resource \"secrets\" in API group \"\" in the namespace \"vault\""
        );
        let s = e.to_status();
        assert_eq!(s["code"], 403);
        assert_eq!(s["details"], json!({"name": "x", "kind": "secrets"}));
        let e = ApiError::forbidden("u", "create", "", "pods", "exec", "p", "vault");
        assert!(e.message.contains("cannot create resource \"pods/exec\""));
    }

    #[test]
    fn not_found_names_group_resources() {
        let e = ApiError::not_found("coordination.k8s.io", "leases", "l");
        assert_eq!(e.message, "leases.coordination.k8s.io \"l\" not found");
        assert_eq!(e.to_status()["details"]["group"], "coordination.k8s.io");
    }
}
