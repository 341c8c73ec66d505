//! The generic namespaced object store behind Secrets, Leases and Events.
//!
//! Owns the semantics every kind shares: create (409 AlreadyExists), get and
//! delete (404), replace with optimistic concurrency on `resourceVersion`,
//! read-modify-write for patches, label-selected lists, server-assigned
//! metadata. Per-kind rules come from [`Kind::normalize`]; the wire format
//! and patch formats are decided by the API layer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde_json::{json, Value};

use crate::kinds::Kind;
use crate::managed;
use crate::meta::{self, Revisions};
use crate::selector::Selector;
use crate::status::ApiError;

type Key = (Kind, String, String);

/// How [`Store::write`] treats a write.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// Create the object when absent (server-side apply).
    pub create_if_absent: bool,
    /// Validate and answer without storing (`dryRun=All`).
    pub dry_run: bool,
    /// Record the change as an `Update` by this field manager.
    pub manager: Option<&'a str>,
}

/// All stored objects, keyed by (kind, namespace, name).
pub struct Store {
    revisions: Arc<Revisions>,
    objects: Mutex<BTreeMap<Key, Value>>,
}

fn str_at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn key(kind: Kind, ns: &str, name: &str) -> Key {
    (kind, ns.to_string(), name.to_string())
}

impl Store {
    /// An empty store drawing resourceVersions from `revisions`.
    pub fn new(revisions: Arc<Revisions>) -> Self {
        Self {
            revisions,
            objects: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Value>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks kind/apiVersion/namespace of a body and fills them in.
    fn check_body(kind: Kind, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(k) = str_at(obj, "/kind") {
            if k != kind.kind() {
                return Err(ApiError::bad_request(format!(
                    "the kind of the provided object ({k}) does not match the resource {}",
                    kind.resource()
                )));
            }
        }
        if let Some(body_ns) = str_at(obj, "/metadata/namespace") {
            if body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        obj["kind"] = json!(kind.kind());
        obj["apiVersion"] = json!(kind.api_version());
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["namespace"] = json!(ns);
        Ok(())
    }

    /// Creates an object; `metadata.generateName` is honoured. `dry_run`
    /// validates and answers without storing (`?dryRun=All`).
    pub fn create(
        &self,
        kind: Kind,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
        manager: &str,
    ) -> Result<Value, ApiError> {
        Self::check_body(kind, ns, &mut obj)?;
        let name = match (
            str_at(&obj, "/metadata/name"),
            str_at(&obj, "/metadata/generateName"),
        ) {
            (Some(n), _) => n.to_string(),
            (None, Some(prefix)) => {
                const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                let mut rng = rand::rng();
                let suffix: String = (0..5)
                    .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                    .collect();
                format!("{prefix}{suffix}")
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    kind.kind(),
                    kind.group(),
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
        };
        obj["metadata"]["name"] = json!(name);
        kind.normalize(&mut obj)?;
        let mut objects = self.lock();
        let k = key(kind, ns, &name);
        if objects.contains_key(&k) {
            return Err(ApiError::already_exists(
                kind.group(),
                kind.resource(),
                &name,
            ));
        }
        let md = &mut obj["metadata"];
        md["uid"] = json!(meta::new_uid());
        md["creationTimestamp"] = json!(meta::rfc3339(meta::now()));
        if let Some(m) = md.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        managed::record_update(None, &mut obj, manager, kind.api_version());
        let md = &mut obj["metadata"];
        if !dry_run {
            md["resourceVersion"] = json!(self.revisions.next().to_string());
            objects.insert(k, obj.clone());
        }
        Ok(obj)
    }

    /// Returns one object or 404.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.lock()
            .get(&key(kind, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind.group(), kind.resource(), name))
    }

    /// Objects of `kind` in `ns` (all namespaces if `None`) matching `selector`, plus the list resourceVersion.
    pub fn list(&self, kind: Kind, ns: Option<&str>, selector: &Selector) -> (Vec<Value>, String) {
        let objects = self.lock();
        let items = objects
            .iter()
            .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .filter(|(_, v)| selector.matches_object(v))
            .map(|(_, v)| v.clone())
            .collect();
        (items, self.revisions.current().to_string())
    }

    /// PUT: replaces the object; a non-empty `metadata.resourceVersion` must match.
    pub fn replace(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        obj: Value,
        dry_run: bool,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if let Some(body_name) = str_at(&obj, "/metadata/name") {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        let how = Write {
            create_if_absent: false,
            dry_run,
            manager: Some(manager),
        };
        self.write(kind, ns, name, how, |_| Ok(obj))
    }

    /// Read-modify-write under one lock. `change` gets the current object (None if absent
    /// and `create_if_absent`); the result's `metadata.resourceVersion`, if set, must still
    /// match. Identity fields (uid, creationTimestamp, name, namespace) are preserved.
    /// `manager` records the write as an `Update` in managedFields (None: the change
    /// already did its own bookkeeping, as server-side apply does).
    pub fn write(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        how: Write<'_>,
        change: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut objects = self.lock();
        let k = key(kind, ns, name);
        let current = objects.get(&k);
        let Write {
            create_if_absent,
            dry_run,
            manager,
        } = how;
        if current.is_none() && !create_if_absent {
            return Err(ApiError::not_found(kind.group(), kind.resource(), name));
        }
        let mut obj = change(current)?;
        Self::check_body(kind, ns, &mut obj)?;
        obj["metadata"]["name"] = json!(name);
        match current {
            Some(cur) => {
                let have = str_at(cur, "/metadata/resourceVersion").unwrap_or_default();
                if let Some(want) = str_at(&obj, "/metadata/resourceVersion") {
                    if want != have {
                        return Err(ApiError::conflict(kind.group(), kind.resource(), name));
                    }
                }
                for field in ["uid", "creationTimestamp"] {
                    obj["metadata"][field] = cur["metadata"][field].clone();
                }
            }
            None => {
                obj["metadata"]["uid"] = json!(meta::new_uid());
                obj["metadata"]["creationTimestamp"] = json!(meta::rfc3339(meta::now()));
            }
        }
        kind.normalize(&mut obj)?;
        if let Some(cur) = current {
            kind.check_update(cur, &obj)?;
        }
        if let Some(m) = manager {
            managed::record_update(current, &mut obj, m, kind.api_version());
        }
        if dry_run {
            let rv = current.map(|c| c["metadata"]["resourceVersion"].clone());
            obj["metadata"]["resourceVersion"] = rv.unwrap_or(Value::Null);
        } else {
            obj["metadata"]["resourceVersion"] = json!(self.revisions.next().to_string());
            objects.insert(k, obj.clone());
        }
        Ok(obj)
    }

    /// Deletes an object; `precondition` is a resourceVersion that must match.
    pub fn delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        precondition: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut objects = self.lock();
        let k = key(kind, ns, name);
        let cur = objects
            .get(&k)
            .ok_or_else(|| ApiError::not_found(kind.group(), kind.resource(), name))?;
        if let Some(want) = precondition.filter(|w| !w.is_empty()) {
            let have = str_at(cur, "/metadata/resourceVersion").unwrap_or_default();
            if want != have {
                return Err(ApiError::precondition_failed(
                    kind.group(),
                    kind.resource(),
                    name,
                    want,
                    have,
                ));
            }
        }
        if dry_run {
            return Ok(cur.clone());
        }
        self.revisions.next();
        objects
            .remove(&k)
            .ok_or_else(|| ApiError::not_found(kind.group(), kind.resource(), name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Arc::new(Revisions::default()))
    }

    fn secret(name: &str) -> Value {
        json!({"metadata": {"name": name}, "stringData": {"k": "v"}})
    }

    #[test]
    fn create_conflicts_and_assigns_metadata() {
        let s = store();
        let a = s
            .create(Kind::Secret, "ns", secret("a"), false, "t")
            .unwrap();
        assert_eq!(a["data"]["k"], "dg==");
        assert!(a["metadata"]["uid"].is_string());
        assert_eq!(
            s.create(Kind::Secret, "ns", secret("a"), false, "t")
                .unwrap_err()
                .reason,
            "AlreadyExists"
        );
        assert!(s
            .create(Kind::Secret, "other", secret("a"), false, "t")
            .is_ok());
    }

    #[test]
    fn replace_checks_resource_version() {
        let s = store();
        let a = s
            .create(
                Kind::Lease,
                "ns",
                json!({"metadata": {"name": "l"}}),
                false,
                "t",
            )
            .unwrap();
        let mut stale = a.clone();
        let b = s.replace(Kind::Lease, "ns", "l", a, false, "t").unwrap();
        assert_ne!(
            b["metadata"]["resourceVersion"],
            stale["metadata"]["resourceVersion"]
        );
        stale["spec"] = json!({"holderIdentity": "x"});
        assert_eq!(
            s.replace(Kind::Lease, "ns", "l", stale.clone(), false, "t")
                .unwrap_err()
                .code,
            409
        );
        stale["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let c = s
            .replace(Kind::Lease, "ns", "l", stale, false, "t")
            .unwrap();
        assert_eq!(c["metadata"]["uid"], b["metadata"]["uid"]);
    }

    #[test]
    fn dry_run_stores_nothing() {
        let s = store();
        let a = s
            .create(Kind::Secret, "ns", secret("a"), true, "t")
            .unwrap();
        assert_eq!(a["data"]["k"], "dg==");
        assert!(a["metadata"]["resourceVersion"].is_null());
        assert_eq!(s.get(Kind::Secret, "ns", "a").unwrap_err().code, 404);
        s.create(Kind::Secret, "ns", secret("a"), false, "t")
            .unwrap();
        s.delete(Kind::Secret, "ns", "a", None, true).unwrap();
        assert!(s.get(Kind::Secret, "ns", "a").is_ok());
    }

    #[test]
    fn delete_and_list() {
        let s = store();
        s.create(
            Kind::Secret,
            "ns",
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}}),
            false,
            "t",
        )
        .unwrap();
        s.create(
            Kind::Secret,
            "ns",
            json!({"metadata": {"name": "b"}}),
            false,
            "t",
        )
        .unwrap();
        let (items, _) = s.list(Kind::Secret, Some("ns"), &Selector::parse("x=1").unwrap());
        assert_eq!(items.len(), 1);
        assert_eq!(
            s.delete(Kind::Secret, "ns", "a", Some("1"), false)
                .unwrap_err()
                .code,
            409
        );
        s.delete(Kind::Secret, "ns", "a", None, false).unwrap();
        assert_eq!(s.get(Kind::Secret, "ns", "a").unwrap_err().code, 404);
    }
}
