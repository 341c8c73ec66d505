//! Bringing every pod of an initialized cluster up: unseal the initialized
//! ones, find the leader, join and unseal the rest, check the peer set.
//!
//! Owns the order of those steps and their deadlines. It never initializes
//! and never writes credentials; `init`, `join`, `unseal --watch` and the
//! hook all end here.
//!
//! # Guarantees
//! A pod that is already initialized is never joined again; a pod that is
//! unsealed is left alone. Every wait has a deadline from [`Timeouts`].

use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::credentials::Credentials;
use crate::ops::keyring::Keyring;
use crate::ops::node::{
    leader, raft_join, raft_peers, seal_status, seal_status_when_up, NodeError, RaftPeer, VaultNode,
};
use crate::ops::unseal::{unseal_with_any, KeySet, UnsealError, UnsealOutcome};
use crate::ops::wait::poll_until;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Timeouts {
    /// For the first unsealed node to become the active leader.
    pub leader: Duration,
    /// For a pod that does not exist yet (OrderedReady) to appear.
    pub pod_appear: Duration,
    /// For every pod to show up in the raft peer set.
    pub peers: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            leader: Duration::from_secs(60),
            pod_appear: Duration::from_secs(120),
            peers: Duration::from_secs(60),
        }
    }
}

/// What happened to one pod.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PodResult {
    pub pod: String,
    pub joined: bool,
    pub unseal: UnsealOutcome,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReconcileReport {
    pub leader: String,
    pub leader_address: String,
    pub cluster_id: String,
    pub pods: Vec<PodResult>,
    pub peers: Vec<RaftPeer>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Unseal(#[from] UnsealError),
    #[error("could not read the status of pod {pod}: {source}")]
    Status { pod: String, source: NodeError },
    #[error("could not join pod {pod} to the leader at {leader}: {source}")]
    Join {
        pod: String,
        leader: String,
        source: NodeError,
    },
    #[error("no pod became the active leader within {waited:?}; check `kubectl vault status`")]
    NoLeader { waited: Duration },
    #[error("no pod is initialized, so there is no leader to join; run `kubectl vault init`")]
    NothingInitialized,
    #[error("pods {missing:?} are not in the raft peer set after {waited:?}; check `kubectl vault status`")]
    PeersIncomplete {
        missing: Vec<String>,
        waited: Duration,
    },
}

/// Unseals, joins and verifies every pod the workload wants.
pub async fn reconcile<C: VaultCluster>(
    cluster: &C,
    keys: &Keyring,
    timeouts: &Timeouts,
) -> Result<ReconcileReport, ReconcileError> {
    let credentials = &keys.current;
    let sets = keys.key_sets();
    let sets = &sets[..];
    let nodes = cluster.nodes().await?;
    let statuses = futures::future::join_all(
        nodes
            .iter()
            .map(|n| seal_status_when_up(n, timeouts.pod_appear)),
    )
    .await;
    let mut initialized = Vec::new();
    for (node, status) in nodes.iter().zip(statuses) {
        let status = status.map_err(|source| ReconcileError::Status {
            pod: node.name().to_owned(),
            source,
        })?;
        if status.initialized {
            initialized.push(node.clone());
        }
    }
    if initialized.is_empty() {
        return Err(ReconcileError::NothingInitialized);
    }
    let mut report = ReconcileReport::default();
    let mut done = BTreeSet::new();
    let outcomes =
        futures::future::join_all(initialized.iter().map(|n| unseal_first(n, sets))).await;
    for (node, outcome) in initialized.iter().zip(outcomes) {
        let unseal = outcome?;
        report.pods.push(PodResult {
            pod: node.name().to_owned(),
            joined: false,
            unseal,
        });
        done.insert(node.name().to_owned());
    }
    fail::fail_point!("reconcile::after_initialized_unsealed");

    let (leader_pod, leader_address) = wait_for_leader(&initialized, timeouts.leader).await?;
    tracing::info!(pod = %leader_pod, address = %leader_address, "leader is active");
    report.leader = leader_pod;
    report.leader_address = leader_address.clone();

    let replicas = cluster.replicas();
    loop {
        let nodes = cluster.nodes().await?;
        let todo: Vec<_> = nodes
            .into_iter()
            .filter(|n| !done.contains(n.name()))
            .collect();
        let results = futures::future::join_all(
            todo.iter()
                .map(|n| bring_up(n, &leader_address, sets, timeouts.pod_appear)),
        )
        .await;
        for (node, result) in todo.iter().zip(results) {
            report.pods.push(result?);
            done.insert(node.name().to_owned());
            fail::fail_point!("reconcile::after_pod");
        }
        if done.len() >= replicas {
            break;
        }
        let missing = (0..replicas).find(|i| !done.iter().any(|p| ordinal_of(p) == Some(*i)));
        match missing {
            Some(ordinal) => {
                tracing::info!(ordinal, "waiting for the next pod to appear");
                cluster.wait_for_node(ordinal, timeouts.pod_appear).await?;
            }
            None => break,
        }
    }

    let leader_node = initialized
        .iter()
        .find(|n| n.name() == report.leader)
        .unwrap_or(&initialized[0]);
    report.peers = wait_for_peers(leader_node, credentials, &done, timeouts.peers).await?;
    if let Ok(status) = seal_status(leader_node).await {
        report.cluster_id = status.cluster_id;
    }
    report.pods.sort_by_key(|p| ordinal_of(&p.pod));
    Ok(report)
}

/// Joins `node` if it is not initialized, then unseals it.
async fn bring_up(
    node: &impl VaultNode,
    leader_address: &str,
    sets: &[KeySet<'_>],
    timeout: Duration,
) -> Result<PodResult, ReconcileError> {
    let pod = node.name().to_owned();
    let status =
        seal_status_when_up(node, timeout)
            .await
            .map_err(|source| ReconcileError::Status {
                pod: pod.clone(),
                source,
            })?;
    let mut joined = false;
    if !status.initialized {
        tracing::info!(pod = %pod, leader = %leader_address, "joining");
        raft_join(node, leader_address)
            .await
            .map_err(|source| ReconcileError::Join {
                pod: pod.clone(),
                leader: leader_address.to_owned(),
                source,
            })?;
        joined = true;
        fail::fail_point!("reconcile::after_join");
        // The node reports itself initialized once it has the join in hand.
        poll_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { seal_status(node).await.ok().filter(|s| s.initialized) },
        )
        .await;
    }
    let unseal = unseal_first(node, sets).await?;
    Ok(PodResult {
        pod,
        joined,
        unseal,
    })
}

/// Unseals with the first generation the node accepts, and says which.
async fn unseal_first(
    node: &impl VaultNode,
    sets: &[KeySet<'_>],
) -> Result<UnsealOutcome, UnsealError> {
    let (outcome, generation) = unseal_with_any(node, sets).await?;
    if let Some(generation) = generation {
        tracing::info!(pod = node.name(), generation, "unsealed");
    }
    Ok(outcome)
}

/// Waits until one of `nodes` is the active leader; returns its pod and API address.
pub async fn wait_for_leader<N: VaultNode>(
    nodes: &[N],
    timeout: Duration,
) -> Result<(String, String), ReconcileError> {
    poll_until(timeout, Duration::from_millis(250), || async {
        for node in nodes {
            if let Ok(l) = leader(node).await {
                if l.is_self && !l.leader_address.is_empty() {
                    return Some((node.name().to_owned(), l.leader_address));
                }
            }
        }
        None
    })
    .await
    .ok_or(ReconcileError::NoLeader { waited: timeout })
}

async fn wait_for_peers(
    node: &impl VaultNode,
    credentials: &Credentials,
    pods: &BTreeSet<String>,
    timeout: Duration,
) -> Result<Vec<RaftPeer>, ReconcileError> {
    let complete = |peers: &[RaftPeer]| {
        pods.iter()
            .all(|p| peers.iter().any(|peer| &peer.node_id == p))
    };
    let found = poll_until(timeout, Duration::from_millis(300), || async {
        raft_peers(node, &credentials.root_token)
            .await
            .ok()
            .filter(|peers| complete(peers))
    })
    .await;
    if let Some(peers) = found {
        return Ok(peers);
    }
    let last = raft_peers(node, &credentials.root_token)
        .await
        .unwrap_or_default();
    Err(ReconcileError::PeersIncomplete {
        missing: pods
            .iter()
            .filter(|p| !last.iter().any(|peer| &peer.node_id == *p))
            .cloned()
            .collect(),
        waited: timeout,
    })
}

/// The StatefulSet ordinal at the end of a pod name (`openbao-2` → 2).
pub fn ordinal_of(pod: &str) -> Option<usize> {
    pod.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}
