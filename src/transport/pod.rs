//! One server pod, reached by the transport the user chose.
//!
//! Owns the dispatch between the exec transport (the default: the container's
//! CLI with its own address and TLS settings) and the port-forward transport
//! (plain HTTP to the listener, faster). The pod-local copy of an in-flight
//! `sys/init` answer needs a shell in the container, so it always uses exec.

use crate::ops::node::{NodeError, Request, VaultNode};
use crate::ops::secret::SecretBytes;
use crate::transport::exec::ExecNode;
use crate::transport::portforward::PortForwardNode;
use serde_json::Value;

/// Which way requests reach a pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// Run the container's `bao`/`vault` CLI through pods/exec.
    #[default]
    Exec,
    /// HTTP to the pod's listener through pods/portforward (plain-HTTP listeners only).
    PortForward,
}

#[derive(Clone)]
pub struct PodNode {
    exec: ExecNode,
    forward: Option<PortForwardNode>,
    /// The pod's IPs and DNS names, to recognise it among raft peers.
    hosts: Vec<String>,
    /// metadata.uid: tells a pod from its successor of the same name.
    uid: String,
}

impl PodNode {
    pub fn new(exec: ExecNode, forward: Option<PortForwardNode>) -> Self {
        PodNode {
            exec,
            forward,
            hosts: Vec::new(),
            uid: String::new(),
        }
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
}

impl VaultNode for PodNode {
    fn name(&self) -> &str {
        self.exec.name()
    }

    fn hosts(&self) -> &[String] {
        &self.hosts
    }

    async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
        match &self.forward {
            Some(forward) => forward.call(req).await,
            None => self.exec.call(req).await,
        }
    }

    async fn init(&self, body: SecretBytes) -> Result<Value, NodeError> {
        self.exec.init(body).await
    }

    async fn recover_init_response(&self) -> Result<Option<Value>, NodeError> {
        self.exec.recover_init_response().await
    }

    async fn clear_init_response(&self) -> Result<(), NodeError> {
        self.exec.clear_init_response().await
    }
}
