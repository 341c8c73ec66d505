//! In-memory doubles of [`VaultNode`] and [`VaultCluster`] for unit tests of
//! the state machines: a server that answers the few endpoints they call,
//! from a state the test sets up, so each transition runs in microseconds.

use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::node::{NodeError, Request, VaultNode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one fake server is and knows.
#[derive(Clone, Debug)]
pub struct ServerState {
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: u32,
    pub progress: u32,
    /// `raft` answers `sys/leader` as an active HA node; anything else as a
    /// standalone server (`ha_enabled: false`, no raft endpoints).
    pub storage_type: &'static str,
    /// The raft configuration's servers, when `storage_type` is raft.
    pub peers: Value,
    pub api_addr: String,
}

/// A fake server; clones share their state.
#[derive(Clone)]
pub struct FakeNode {
    name: String,
    hosts: Vec<String>,
    pub state: Arc<Mutex<ServerState>>,
}

impl FakeNode {
    pub fn new(name: &str, hosts: &[&str], state: ServerState) -> Self {
        FakeNode {
            name: name.to_owned(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// An initialized, sealed standalone server on file storage.
    pub fn standalone(name: &str, threshold: u32) -> Self {
        FakeNode::new(
            name,
            &[],
            ServerState {
                initialized: true,
                sealed: true,
                threshold,
                progress: 0,
                storage_type: "file",
                peers: json!([]),
                api_addr: String::new(),
            },
        )
    }

    pub fn sealed(&self) -> bool {
        self.state.lock().map(|s| s.sealed).unwrap_or(true)
    }
}

impl VaultNode for FakeNode {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call_secret(
        &self,
        req: Request<'_>,
    ) -> Result<crate::ops::secret::SecretAnswer, NodeError> {
        self.call(req).await.map(crate::ops::double::secret_answer)
    }

    fn hosts(&self) -> &[String] {
        &self.hosts
    }

    async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| NodeError::Unreachable("poisoned".into()))?;
        let raft = s.storage_type == "raft";
        let seal_status = |s: &ServerState| {
            json!({
                "initialized": s.initialized, "sealed": s.sealed, "t": s.threshold,
                "n": s.threshold, "progress": s.progress, "storage_type": s.storage_type,
                "cluster_id": "c1",
            })
        };
        match req.path {
            "sys/seal-status" => Ok(seal_status(&s)),
            "sys/unseal" => {
                let body: Value = req
                    .body
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b.expose()).ok())
                    .unwrap_or_default();
                if body.get("reset").is_some() {
                    s.progress = 0;
                } else {
                    s.progress += 1;
                    if s.progress >= s.threshold {
                        s.sealed = false;
                        s.progress = 0;
                    }
                }
                Ok(seal_status(&s))
            }
            "sys/leader" if s.sealed && raft => Err(NodeError::Api {
                status: 503,
                errors: vec!["Vault is sealed".into()],
            }),
            "sys/leader" if raft => Ok(json!({
                "ha_enabled": true, "is_self": true, "leader_address": s.api_addr,
            })),
            "sys/leader" => Ok(json!({"ha_enabled": false})),
            "sys/storage/raft/configuration" if raft && req.token.is_some() => {
                Ok(json!({"config": {"servers": s.peers}}))
            }
            path => Err(NodeError::Api {
                status: 404,
                errors: vec![format!("unsupported path {path}")],
            }),
        }
    }
}

/// A double's answer as a transport would hand it over for secrets.
pub fn secret_answer(value: Value) -> crate::ops::secret::SecretAnswer {
    crate::ops::secret::SecretAnswer::new(serde_json::to_vec(&value).unwrap_or_default())
}

/// A fixed set of fake servers.
pub struct FakeCluster {
    pub nodes: Vec<FakeNode>,
    pub replicas: usize,
}

impl VaultCluster for FakeCluster {
    type Node = FakeNode;

    fn replicas(&self) -> usize {
        self.replicas
    }

    async fn nodes(&self) -> Result<Vec<FakeNode>, ClusterError> {
        Ok(self.nodes.clone())
    }

    async fn wait_for_node(
        &self,
        ordinal: usize,
        waited: Duration,
    ) -> Result<FakeNode, ClusterError> {
        self.nodes
            .get(ordinal)
            .cloned()
            .ok_or_else(|| ClusterError::PodMissing {
                pod: format!("vault-{ordinal}"),
                waited,
            })
    }
}
