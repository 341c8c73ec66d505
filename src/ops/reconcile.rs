//! Bringing every pod of an initialized cluster up: unseal the initialized
//! ones, find the leader, join and unseal the rest, check the peer set.
//!
//! Owns the order of those steps and their deadlines. It never initializes
//! and never writes credentials; `init`, `join`, `unseal --watch` and the
//! hook all end here.
//!
//! A standalone server (file storage, `ha_enabled: false`, the charts'
//! default) has no leader election, no joins and no peer set: it is done
//! once it is unsealed.
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
use crate::ops::peers::is_peer_of;
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
    /// The server is standalone (not HA, e.g. file storage): no joins, no peers.
    pub standalone: bool,
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
    #[error("pods {} are not initialized and cannot join: the servers are standalone (not HA); a standalone install has one replica, and moving it to raft is `kubectl vault migrate`", pods.join(", "))]
    StandaloneCannotJoin { pods: Vec<String> },
    #[error("pods {} are not in the raft peer set after {waited:?}; check `kubectl vault status`", missing.join(", "))]
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

    let active = wait_for_active(&initialized, timeouts.leader).await?;
    tracing::info!(pod = %active.pod, address = %active.address, ha = active.ha, "active");
    report.leader = active.pod;
    report.leader_address = active.address.clone();
    let leader_address = active.address;
    if !active.ha {
        report.standalone = true;
        let others: Vec<String> = cluster
            .nodes()
            .await?
            .iter()
            .map(|n| n.name().to_owned())
            .filter(|n| !done.contains(n))
            .collect();
        if !others.is_empty() {
            return Err(ReconcileError::StandaloneCannotJoin { pods: others });
        }
        if let Ok(status) = seal_status(&initialized[0]).await {
            report.cluster_id = status.cluster_id;
        }
        report.pods.sort_by_key(|p| ordinal_of(&p.pod));
        return Ok(report);
    }

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
    report.peers = wait_for_peers(cluster, leader_node, credentials, &done, timeouts.peers).await?;
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

/// The server that answers writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    pub pod: String,
    /// Its `leader_address` (the API address peers join); empty when standalone.
    pub address: String,
    /// False for a standalone server (`ha_enabled: false`, e.g. file storage).
    pub ha: bool,
}

/// Waits until one of `nodes` is active: the HA leader, or an unsealed
/// standalone server (which has no leader to report).
pub async fn wait_for_active<N: VaultNode>(
    nodes: &[N],
    timeout: Duration,
) -> Result<Active, ReconcileError> {
    poll_until(timeout, Duration::from_millis(250), || async {
        for node in nodes {
            let Ok(l) = leader(node).await else { continue };
            if l.is_self && !l.leader_address.is_empty() {
                return Some(Active {
                    pod: node.name().to_owned(),
                    address: l.leader_address,
                    ha: true,
                });
            }
            // A standalone server answers `ha_enabled: false` sealed or not.
            if !l.ha_enabled
                && seal_status(node)
                    .await
                    .is_ok_and(|s| s.initialized && !s.sealed)
            {
                return Some(Active {
                    pod: node.name().to_owned(),
                    address: String::new(),
                    ha: false,
                });
            }
        }
        None
    })
    .await
    .ok_or(ReconcileError::NoLeader { waited: timeout })
}

/// [`wait_for_active`] as `(pod, leader address)`; the address is empty for
/// a standalone server.
pub async fn wait_for_leader<N: VaultNode>(
    nodes: &[N],
    timeout: Duration,
) -> Result<(String, String), ReconcileError> {
    wait_for_active(nodes, timeout)
        .await
        .map(|a| (a.pod, a.address))
}

/// Waits until every pod in `pods` has a raft peer: by node id or by the
/// host of its address (see [`crate::ops::peers`]). Pod hosts are re-read
/// on every poll, since a pod that was deleted comes back with a new IP.
async fn wait_for_peers<C: VaultCluster>(
    cluster: &C,
    node: &impl VaultNode,
    credentials: &Credentials,
    pods: &BTreeSet<String>,
    timeout: Duration,
) -> Result<Vec<RaftPeer>, ReconcileError> {
    let found = poll_until(timeout, Duration::from_millis(300), || async {
        let peers = raft_peers(node, &credentials.root_token).await.ok()?;
        let nodes = cluster.nodes().await.ok()?;
        missing_peers(pods, &nodes, &peers)
            .is_empty()
            .then_some(peers)
    })
    .await;
    if let Some(peers) = found {
        return Ok(peers);
    }
    let last = raft_peers(node, &credentials.root_token)
        .await
        .unwrap_or_default();
    let nodes = cluster.nodes().await.unwrap_or_default();
    Err(ReconcileError::PeersIncomplete {
        missing: missing_peers(pods, &nodes, &last),
        waited: timeout,
    })
}

/// The pods of `pods` that no peer in `peers` belongs to.
fn missing_peers<N: VaultNode>(
    pods: &BTreeSet<String>,
    nodes: &[N],
    peers: &[RaftPeer],
) -> Vec<String> {
    pods.iter()
        .filter(|pod| {
            let hosts = nodes
                .iter()
                .find(|n| n.name() == pod.as_str())
                .map_or(&[][..], |n| n.hosts());
            !peers.iter().any(|peer| is_peer_of(peer, pod, hosts))
        })
        .cloned()
        .collect()
}

/// The StatefulSet ordinal at the end of a pod name (`openbao-2` → 2).
pub fn ordinal_of(pod: &str) -> Option<usize> {
    pod.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::credentials::sample;
    use crate::ops::double::{FakeCluster, FakeNode, ServerState};
    use serde_json::json;

    fn short() -> Timeouts {
        Timeouts {
            leader: Duration::from_secs(2),
            pod_appear: Duration::from_secs(2),
            peers: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn a_standalone_server_is_done_once_unsealed() {
        let node = FakeNode::standalone("openbao-0", 2);
        let cluster = FakeCluster {
            nodes: vec![node.clone()],
            replicas: 1,
        };
        let report = reconcile(&cluster, &Keyring::of(&sample(3, 2)), &short())
            .await
            .unwrap();
        assert!(!node.sealed());
        assert!(report.standalone);
        assert_eq!(report.leader, "openbao-0");
        assert!(report.peers.is_empty());
        assert_eq!(report.pods.len(), 1);
    }

    #[tokio::test]
    async fn standalone_servers_cannot_join_each_other() {
        let fresh = FakeNode::standalone("openbao-1", 2);
        fresh.state.lock().unwrap().initialized = false;
        let cluster = FakeCluster {
            nodes: vec![FakeNode::standalone("openbao-0", 2), fresh],
            replicas: 2,
        };
        let err = reconcile(&cluster, &Keyring::of(&sample(3, 2)), &short())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ReconcileError::StandaloneCannotJoin { pods } if pods == &["openbao-1"]),
            "{err}"
        );
        assert!(err.to_string().contains("kubectl vault migrate"), "{err}");
    }

    fn raft_node(name: &str, ip: &str, peers: serde_json::Value) -> FakeNode {
        FakeNode::new(
            name,
            &[ip, &format!("{name}.openbao-internal")],
            ServerState {
                initialized: true,
                sealed: true,
                threshold: 2,
                progress: 0,
                storage_type: "raft",
                peers,
                api_addr: format!("http://{ip}:8200"),
            },
        )
    }

    #[tokio::test]
    async fn raft_peers_with_generated_ids_are_found_by_address() {
        // Generated node ids: one peer by IP, one by its DNS name.
        let peers = json!([
            {"node_id": "5c1f0e4a-0000-4000-8000-000000000000", "address": "10.0.0.5:8201", "leader": true, "voter": true},
            {"node_id": "9d2e7b1c-0000-4000-8000-000000000000", "address": "openbao-1.openbao-internal.vault.svc:8201", "voter": true},
        ]);
        let cluster = FakeCluster {
            nodes: vec![
                raft_node("openbao-0", "10.0.0.5", peers.clone()),
                raft_node("openbao-1", "10.0.0.6", peers.clone()),
            ],
            replicas: 2,
        };
        let report = reconcile(&cluster, &Keyring::of(&sample(3, 2)), &short())
            .await
            .unwrap();
        assert!(!report.standalone);
        assert_eq!(report.peers.len(), 2);

        // A pod whose node id and addresses are in no peer is reported
        // missing, by name.
        let only_0 = json!([peers[0].clone()]);
        let cluster = FakeCluster {
            nodes: vec![
                raft_node("openbao-0", "10.0.0.5", only_0.clone()),
                raft_node("openbao-1", "10.0.0.6", only_0),
            ],
            replicas: 2,
        };
        let err = reconcile(&cluster, &Keyring::of(&sample(3, 2)), &short())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ReconcileError::PeersIncomplete { missing, .. } if missing == &["openbao-1"]),
            "{err}"
        );
    }
}
