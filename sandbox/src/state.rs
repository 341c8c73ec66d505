//! Everything a running sandbox shares between the API server, the control
//! endpoints and the library handle.
//!
//! Owns construction of the parts (fleet, store, faults, audit, token); each
//! part decides its own behaviour.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rand::Rng;

use crate::audit::Audit;
use crate::faults::Faults;
use crate::fleet::Fleet;
use crate::meta::{self, Revisions};
use crate::options::ClusterOptions;
use crate::store::Store;

/// The user every valid token authenticates as.
pub const USER: &str = "sandbox-admin";

/// Shared state of one sandbox cluster.
pub struct Sandbox {
    /// Pods and their processes.
    pub fleet: Fleet,
    /// Secrets, Leases, Events.
    pub store: Store,
    /// Injected faults and RBAC denials.
    pub faults: Faults,
    /// The audit log.
    pub audit: Audit,
    /// resourceVersion source.
    pub revisions: Arc<Revisions>,
    /// The bearer token in the kubeconfig.
    pub token: String,
    /// Namespaces that exist.
    pub namespaces: Vec<String>,
    /// creationTimestamp of the namespaces.
    pub started: String,
    /// Signalled by the `shutdown` control endpoint.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Sandbox {
    /// Builds the parts for `opts` in `dir` (no process started yet).
    pub fn new(opts: ClusterOptions, dir: &Path) -> anyhow::Result<Self> {
        let revisions = Arc::new(Revisions::default());
        let audit = Audit::open(&dir.join("audit.jsonl")).context("open the audit log")?;
        let token: String = {
            let mut rng = rand::rng();
            (0..40)
                .map(|_| {
                    char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                })
                .collect()
        };
        let mut namespaces = vec![opts.namespace.clone()];
        for ns in ["default", "kube-system"] {
            if !namespaces.iter().any(|n| n == ns) {
                namespaces.push(ns.to_string());
            }
        }
        Ok(Self {
            fleet: Fleet::new(opts, dir, revisions.clone())?,
            store: Store::new(revisions.clone()),
            faults: Faults::default(),
            audit,
            revisions,
            token,
            namespaces,
            started: meta::rfc3339(meta::now()),
            shutdown: tokio::sync::watch::channel(false).0,
        })
    }

    /// The cluster namespace (where the pods live).
    pub fn namespace(&self) -> &str {
        &self.fleet.options().namespace
    }
}
