//! Observing a cluster without changing it: each node's seal and HA state,
//! read concurrently.

use crate::ops::node::{leader, seal_status, LeaderStatus, SealStatus, VaultNode};

/// What one node said about itself.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeObservation {
    pub pod: String,
    pub seal: Option<SealStatus>,
    pub leader: Option<LeaderStatus>,
    /// Why the node could not be read.
    pub error: Option<String>,
}

/// Reads every node at once; an unreachable node is reported, not fatal.
pub async fn observe<N: VaultNode>(nodes: &[N]) -> Vec<NodeObservation> {
    futures::future::join_all(nodes.iter().map(observe_one)).await
}

async fn observe_one(node: &impl VaultNode) -> NodeObservation {
    let pod = node.name().to_owned();
    match seal_status(node).await {
        Ok(seal) => {
            let leader = if seal.sealed {
                None
            } else {
                leader(node).await.ok()
            };
            NodeObservation {
                pod,
                seal: Some(seal),
                leader,
                error: None,
            }
        }
        Err(e) => NodeObservation {
            pod,
            seal: None,
            leader: None,
            error: Some(e.to_string()),
        },
    }
}
