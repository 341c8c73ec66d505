//! One Vault/OpenBao server as the operations layer sees it.
//!
//! Owns the [`VaultNode`] seam (a request in, the response's JSON out) and the
//! typed calls built on it. How a request reaches the server (exec into a pod,
//! the Vault API through port-forward) is the transport's business; nothing here knows Kubernetes.

use crate::ops::secret::{key_body, Secret, SecretAnswer, SecretBytes};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;

/// The HTTP verb a request maps onto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Read,
    Write,
    Delete,
}

/// One API request. Its body and token never leave the transport except as
/// stdin or an HTTP body/header.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    pub body: Option<SecretBytes>,
    pub token: Option<&'a Secret>,
}

impl<'a> Request<'a> {
    pub fn read(path: &'a str) -> Self {
        Request {
            method: Method::Read,
            path,
            body: None,
            token: None,
        }
    }

    pub fn write(path: &'a str, body: SecretBytes) -> Self {
        Request {
            method: Method::Write,
            path,
            body: Some(body),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &'a Secret) -> Self {
        self.token = Some(token);
        self
    }
}

/// Why a call failed. Messages carry the server's words, never request bodies.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the server answered {status}: {}", errors.join("; "))]
    Api { status: u16, errors: Vec<String> },
    #[error("could not reach the server: {0}")]
    Unreachable(String),
    #[error("the pod is gone: {0}")]
    PodGone(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("unexpected answer: {0}")]
    Malformed(String),
    /// The server's identity could not be verified (TLS); never retried.
    #[error("refused: {0}")]
    Untrusted(String),
}

impl NodeError {
    pub fn status(&self) -> Option<u16> {
        match self {
            NodeError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A server the operations can talk to.
pub trait VaultNode: Send + Sync {
    /// The pod name, for messages.
    fn name(&self) -> &str;

    /// Hosts this server is known by (its IPs and DNS names, no ports), to
    /// recognise it in the raft peer set when its node id is generated. The
    /// default knows none, so only a node id equal to [`Self::name`] matches.
    fn hosts(&self) -> &[String] {
        &[]
    }

    /// The CA (PEM) the server's own container trusts for its TLS
    /// listener, which the servers of one workload share: sent along when
    /// this node joins a leader over https. `None` for plain HTTP.
    fn listener_ca(&self) -> Option<&str> {
        None
    }

    /// The client certificate the server's own container presents to its
    /// TLS listener (`*_CLIENT_CERT`/`*_CLIENT_KEY`): sent along when this
    /// node joins a leader whose listener requires one.
    fn listener_client(&self) -> Option<&ListenerIdentity> {
        None
    }

    /// Sends one request; returns the response's `data` (or the whole body when
    /// it has none, or `null` for an empty answer).
    fn call(&self, req: Request<'_>) -> impl Future<Output = Result<Value, NodeError>> + Send;

    /// Sends one request whose answer carries secrets (new key shares, an
    /// OTP, an encoded token) and returns the raw answer in zeroizing
    /// memory, never as a `serde_json::Value`. Errors map as in [`Self::call`].
    fn call_secret(
        &self,
        req: Request<'_>,
    ) -> impl Future<Output = Result<SecretAnswer, NodeError>> + Send;

    /// `sys/init`, leaving a copy of the response where [`Self::recover_init_response`]
    /// finds it if this process dies before the caller stores it. The default
    /// keeps no copy.
    fn init(
        &self,
        body: SecretBytes,
    ) -> impl Future<Output = Result<SecretAnswer, NodeError>> + Send {
        async move { self.call_secret(Request::write("sys/init", body)).await }
    }

    /// The response an earlier, interrupted [`Self::init`] left behind.
    fn recover_init_response(
        &self,
    ) -> impl Future<Output = Result<Option<SecretAnswer>, NodeError>> + Send {
        async { Ok(None) }
    }

    /// Removes the copy once the response is stored durably.
    fn clear_init_response(&self) -> impl Future<Output = Result<(), NodeError>> + Send {
        async { Ok(()) }
    }
}

/// `sys/seal-status`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
pub struct SealStatus {
    #[serde(default)]
    pub initialized: bool,
    #[serde(default)]
    pub sealed: bool,
    #[serde(default, rename = "t")]
    pub threshold: u32,
    #[serde(default, rename = "n")]
    pub shares: u32,
    #[serde(default)]
    pub progress: u32,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default)]
    pub nonce: String,
    /// `raft`, `file`, ...; empty when the server does not say (old versions).
    #[serde(default)]
    pub storage_type: String,
    /// `shamir`, or the auto-unseal provider (`static`, `transit`, ...); see
    /// [`SealStatus::seal`].
    #[serde(default, rename = "type")]
    pub seal_type: String,
    /// True on an auto-unseal server: `t`/`n` then describe its recovery keys.
    #[serde(default)]
    pub recovery_seal: bool,
}

/// What a server keeps its data in, as far as the operations care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// Integrated storage: HA, peers, raft snapshots.
    Raft,
    /// Anything else the server names (`file`, ...): no raft endpoints.
    Other(String),
    /// The server did not say.
    Unreported,
}

impl SealStatus {
    pub fn storage(&self) -> StorageKind {
        match self.storage_type.as_str() {
            "" => StorageKind::Unreported,
            "raft" => StorageKind::Raft,
            other => StorageKind::Other(other.to_owned()),
        }
    }
}

/// `sys/leader`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
pub struct LeaderStatus {
    #[serde(default)]
    pub ha_enabled: bool,
    #[serde(default)]
    pub is_self: bool,
    #[serde(default)]
    pub leader_address: String,
}

/// One server in `sys/storage/raft/configuration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
pub struct RaftPeer {
    pub node_id: String,
    pub address: String,
    #[serde(default)]
    pub leader: bool,
    #[serde(default)]
    pub voter: bool,
}

fn parse<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> Result<T, NodeError> {
    serde_json::from_value(value).map_err(|e| NodeError::Malformed(format!("{what}: {e}")))
}

fn body(value: &Value) -> Result<SecretBytes, NodeError> {
    SecretBytes::json(value).map_err(|e| NodeError::Malformed(e.to_string()))
}

pub async fn seal_status(node: &impl VaultNode) -> Result<SealStatus, NodeError> {
    parse(
        node.call(Request::read("sys/seal-status")).await?,
        "sys/seal-status",
    )
}

/// [`seal_status`], retried while the server is not listening yet (a pod
/// that just started), until `timeout`. Other errors return at once.
pub async fn seal_status_when_up(
    node: &impl VaultNode,
    timeout: std::time::Duration,
) -> Result<SealStatus, NodeError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match seal_status(node).await {
            Err(NodeError::Unreachable(reason)) if std::time::Instant::now() < deadline => {
                tracing::debug!(pod = node.name(), %reason, "server not answering yet");
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            other => return other,
        }
    }
}

pub async fn leader(node: &impl VaultNode) -> Result<LeaderStatus, NodeError> {
    parse(node.call(Request::read("sys/leader")).await?, "sys/leader")
}

/// Submits one share; returns the seal status after it.
pub async fn submit_unseal_share(
    node: &impl VaultNode,
    share: &Secret,
) -> Result<SealStatus, NodeError> {
    let body = key_body(share, None).map_err(|e| NodeError::Malformed(e.to_string()))?;
    parse(
        node.call(Request::write("sys/unseal", body)).await?,
        "sys/unseal",
    )
}

/// Discards a partly submitted set of shares.
pub async fn reset_unseal(node: &impl VaultNode) -> Result<SealStatus, NodeError> {
    let body = body(&serde_json::json!({ "reset": true }))?;
    parse(
        node.call(Request::write("sys/unseal", body)).await?,
        "sys/unseal",
    )
}

/// A client certificate chain and its key (PEM), as a container presents
/// them to a TLS listener.
#[derive(Clone, Debug)]
pub struct ListenerIdentity {
    pub cert_pem: String,
    pub key_pem: SecretBytes,
}

/// The body of `sys/storage/raft/join`; the client key is borrowed from
/// its zeroizing buffer and serialized into another.
#[derive(Serialize)]
struct JoinRequest<'a> {
    leader_api_addr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_ca_cert: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_client_cert: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_client_key: Option<&'a str>,
}

/// Joins an uninitialized node to the raft cluster led by `leader_api_addr`.
pub async fn raft_join(node: &impl VaultNode, leader_api_addr: &str) -> Result<(), NodeError> {
    let tls = leader_api_addr.starts_with("https://");
    let client = node.listener_client().filter(|_| tls);
    let key =
        match client {
            Some(c) => Some(std::str::from_utf8(c.key_pem.expose()).map_err(|_| {
                NodeError::Malformed("the listener client key is not PEM text".into())
            })?),
            None => None,
        };
    let request = JoinRequest {
        leader_api_addr,
        leader_ca_cert: node.listener_ca().filter(|_| tls),
        leader_client_cert: client.map(|c| c.cert_pem.as_str()),
        leader_client_key: key,
    };
    let body = SecretBytes::json(&request).map_err(|e| NodeError::Malformed(e.to_string()))?;
    let answer = node
        .call(Request::write("sys/storage/raft/join", body))
        .await?;
    match answer.get("joined").and_then(Value::as_bool) {
        Some(false) => Err(NodeError::Malformed(
            "sys/storage/raft/join answered joined=false".into(),
        )),
        _ => Ok(()),
    }
}

/// The raft peer set, as the node asked sees it (needs a token).
pub async fn raft_peers(node: &impl VaultNode, token: &Secret) -> Result<Vec<RaftPeer>, NodeError> {
    let value = node
        .call(Request::read("sys/storage/raft/configuration").with_token(token))
        .await?;
    let servers = value
        .pointer("/config/servers")
        .cloned()
        .unwrap_or(Value::Array(vec![]));
    parse(servers, "sys/storage/raft/configuration")
}
