//! One server pod, reached by the transport the user chose.
//!
//! Owns the dispatch between the direct transport (the Vault API through
//! pods/portforward) and the exec transport (the container's CLI), and the
//! `auto` rule between them: direct while the cluster offers port-forward,
//! exec for the rest of the command once it does not (forbidden by RBAC, or
//! an API server without WebSocket port-forward). Only a request that was
//! never sent falls back, so nothing reaches a server twice. `sys/init` and
//! the pod-local copy of its answer need a detached process in the
//! container, so they always use exec.

use crate::ops::node::{ListenerIdentity, NodeError, Request, VaultNode};
use crate::ops::secret::{SecretAnswer, SecretBytes};
use crate::transport::direct::{DirectNode, Opened};
use crate::transport::exec::ExecNode;
use serde_json::Value;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// Which way requests reach a pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// Direct where the cluster serves WebSocket port-forward and the
    /// container names its CA (TLS listeners); exec otherwise.
    #[default]
    Auto,
    /// The Vault API through pods/portforward, plain HTTP or TLS with the container's CA.
    #[value(alias = "port-forward")]
    Direct,
    /// Run the container's `bao`/`vault` CLI through pods/exec.
    Exec,
}

/// The transport one pod's requests took last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Used {
    Direct,
    Exec,
}

impl Used {
    pub fn name(self) -> &'static str {
        match self {
            Used::Direct => "direct",
            Used::Exec => "exec",
        }
    }
}

/// Shared by every pod of one command under `--transport auto`: set, with
/// the reason, once port-forward turned out to be unavailable.
pub type Fallback = Arc<OnceLock<String>>;

#[derive(Clone)]
pub struct PodNode {
    exec: ExecNode,
    direct: Option<DirectNode>,
    /// `auto`: fall back to exec when port-forward is unavailable.
    fallback: Option<Fallback>,
    /// The transport of the last request (0: none yet).
    used: Arc<AtomicU8>,
    /// The pod's IPs and DNS names, to recognise it among raft peers.
    hosts: Vec<String>,
    /// metadata.uid: tells a pod from its successor of the same name.
    uid: String,
    /// The container's CA for its TLS listener (see [`VaultNode::listener_ca`]).
    listener_ca: Option<Arc<str>>,
    /// The container's client certificate (see [`VaultNode::listener_client`]).
    listener_client: Option<Arc<ListenerIdentity>>,
}

impl PodNode {
    /// `fallback` is the command's shared state under `auto`, `None` when
    /// the user chose the transport.
    pub fn new(exec: ExecNode, direct: Option<DirectNode>, fallback: Option<Fallback>) -> Self {
        PodNode {
            exec,
            direct,
            fallback,
            used: Arc::new(AtomicU8::new(0)),
            hosts: Vec::new(),
            uid: String::new(),
            listener_ca: None,
            listener_client: None,
        }
    }

    /// Sets the container's client certificate for its TLS listener.
    pub fn with_listener_client(mut self, client: Option<Arc<ListenerIdentity>>) -> Self {
        self.listener_client = client;
        self
    }

    /// Sets the container's listener CA (PEM).
    pub fn with_listener_ca(mut self, ca: Option<Arc<str>>) -> Self {
        self.listener_ca = ca;
        self
    }

    /// Sets the pod's metadata.uid.
    pub fn with_uid(mut self, uid: String) -> Self {
        self.uid = uid;
        self
    }

    /// The pod's metadata.uid ("" when unknown).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Sets the hosts the pod is known by (see [`VaultNode::hosts`]).
    pub fn with_hosts(mut self, hosts: Vec<String>) -> Self {
        self.hosts = hosts;
        self
    }

    /// The exec side, for work that needs the container's shell.
    pub fn exec(&self) -> &ExecNode {
        &self.exec
    }

    /// The direct side, when this command may use it.
    pub fn direct(&self) -> Option<&DirectNode> {
        match (&self.direct, &self.fallback) {
            (Some(_), Some(fallback)) if fallback.get().is_some() => None,
            (direct, _) => direct.as_ref(),
        }
    }

    /// The transport this pod's last request took.
    pub fn used(&self) -> Option<Used> {
        match self.used.load(Ordering::Relaxed) {
            1 => Some(Used::Direct),
            2 => Some(Used::Exec),
            _ => None,
        }
    }

    fn mark(&self, used: Used) {
        let v = match used {
            Used::Direct => 1,
            Used::Exec => 2,
        };
        self.used.store(v, Ordering::Relaxed);
    }

    /// Records that port-forward is unavailable to this command (under
    /// `auto`), or turns the reason into the error (direct chosen).
    pub fn unavailable(&self, reason: String) -> Result<(), NodeError> {
        match &self.fallback {
            Some(fallback) => {
                if fallback.set(reason.clone()).is_ok() {
                    tracing::info!(pod = %self.exec.name(), %reason, "port-forward is unavailable; using exec for this command");
                }
                Ok(())
            }
            None => Err(NodeError::Forbidden(format!(
                "{reason}; --transport exec works without port-forward"
            ))),
        }
    }

    async fn call_exec(&self, req: Request<'_>) -> Result<Value, NodeError> {
        self.mark(Used::Exec);
        self.exec.call(req).await
    }
}

impl VaultNode for PodNode {
    fn name(&self) -> &str {
        self.exec.name()
    }

    fn hosts(&self) -> &[String] {
        &self.hosts
    }

    fn listener_ca(&self) -> Option<&str> {
        self.listener_ca.as_deref()
    }

    fn listener_client(&self) -> Option<&ListenerIdentity> {
        self.listener_client.as_deref()
    }

    async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
        let Some(direct) = self.direct() else {
            return self.call_exec(req).await;
        };
        match direct.call(&req).await {
            Ok(value) => {
                self.mark(Used::Direct);
                Ok(value)
            }
            Err(Opened::Failed(e)) => {
                self.mark(Used::Direct);
                Err(e)
            }
            Err(Opened::Unavailable(reason)) => {
                self.unavailable(reason)?;
                self.call_exec(req).await
            }
        }
    }

    async fn call_secret(&self, req: Request<'_>) -> Result<SecretAnswer, NodeError> {
        let Some(direct) = self.direct() else {
            self.mark(Used::Exec);
            return self.exec.call_secret(req).await;
        };
        match direct.call_secret(&req).await {
            Ok(answer) => {
                self.mark(Used::Direct);
                Ok(answer)
            }
            Err(Opened::Failed(e)) => {
                self.mark(Used::Direct);
                Err(e)
            }
            Err(Opened::Unavailable(reason)) => {
                self.unavailable(reason)?;
                self.mark(Used::Exec);
                self.exec.call_secret(req).await
            }
        }
    }

    async fn init(&self, body: SecretBytes) -> Result<SecretAnswer, NodeError> {
        self.exec.init(body).await
    }

    async fn recover_init_response(&self) -> Result<Option<SecretAnswer>, NodeError> {
        self.exec.recover_init_response().await
    }

    async fn clear_init_response(&self) -> Result<(), NodeError> {
        self.exec.clear_init_response().await
    }
}
