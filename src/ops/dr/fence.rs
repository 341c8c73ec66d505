//! Sealing every server of a cluster: how a demoted primary is fenced, and
//! how a warm standby is put back to rest after a sync.
//!
//! Owns the order (standbys first, the active node last, so no standby is
//! promoted by the active node's departure while others still serve) and
//! what counts as done: every pod that answers reports sealed.
//!
//! # Guarantees
//! Sealing is idempotent: a sealed pod is left alone, so a re-run after a
//! crash finishes. A pod that does not answer is reported, never assumed
//! sealed.

use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::node::{leader, seal_status, NodeError, Request, VaultNode};
use crate::ops::secret::{Secret, SecretBytes};

#[derive(Debug, Default, serde::Serialize)]
pub struct SealReport {
    /// Pods this run sealed.
    pub sealed: Vec<String>,
    /// Pods that were sealed already.
    pub already: Vec<String>,
    /// Pods that did not answer.
    pub unreachable: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("pod {pod} refused sys/seal: {source}")]
    Seal { pod: String, source: NodeError },
    #[error("pod {pod} still reports unsealed after sys/seal")]
    StillUnsealed { pod: String },
}

/// Seals every pod of `cluster` with `token`: standbys first, then the
/// active node.
pub async fn seal_all<C: VaultCluster>(
    cluster: &C,
    token: &Secret,
) -> Result<SealReport, SealError> {
    let nodes = cluster.nodes().await?;
    let mut report = SealReport::default();
    let mut unsealed = Vec::new();
    for node in &nodes {
        match seal_status(node).await {
            Ok(s) if s.sealed || !s.initialized => report.already.push(node.name().to_owned()),
            Ok(_) => {
                let active = leader(node).await.is_ok_and(|l| l.is_self);
                unsealed.push((active, node));
            }
            Err(_) => report.unreachable.push(node.name().to_owned()),
        }
    }
    // Standbys (false) before the active node (true).
    unsealed.sort_by_key(|(active, _)| *active);
    for (_, node) in unsealed {
        seal_one(node, token).await?;
        report.sealed.push(node.name().to_owned());
    }
    Ok(report)
}

async fn seal_one(node: &impl VaultNode, token: &Secret) -> Result<(), SealError> {
    let pod = node.name().to_owned();
    let body = SecretBytes::json(&serde_json::json!({})).map_err(|e| SealError::Seal {
        pod: pod.clone(),
        source: NodeError::Malformed(e.to_string()),
    })?;
    if let Err(source) = node
        .call(Request::write("sys/seal", body).with_token(token))
        .await
    {
        // Sealed meanwhile (a standby whose active node left): done.
        if !matches!(seal_status(node).await, Ok(s) if s.sealed) {
            return Err(SealError::Seal { pod, source });
        }
    }
    match seal_status(node).await {
        Ok(s) if s.sealed => Ok(()),
        _ => Err(SealError::StillUnsealed { pod }),
    }
}
