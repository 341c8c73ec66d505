//! Phase 2 once the StatefulSet runs raft: where the cluster stands
//! ([`Stage`]), then pod 0 unsealed and leading, the other pods joined
//! before they are unsealed, the result verified and the checkpoint
//! deleted.

use super::sentinel::sentinel_reads_back;
use super::{node_err, pending, stored, FinishReport, MigrateError};
use crate::ops::checkpoint::Phase;
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::keyring::Keyring;
use crate::ops::node::{raft_peers, seal_status_when_up, StorageKind, VaultNode};
use crate::ops::reconcile::{reconcile, ReconcileError, Timeouts};
use crate::ops::store::CredentialStore;
use crate::ops::unseal::UnsealError;
use std::time::Duration;

/// Where the cluster stands for phase 2.
#[derive(Debug, PartialEq, Eq)]
pub enum Stage {
    /// Pod 0 still serves file storage: the values are not applied yet.
    FileStorage,
    /// Pod 0 runs raft.
    Raft { initialized: bool },
    /// Pod 0 does not answer (restarting, or crash-looping).
    Unreachable,
}

/// Pod 0's storage, read once.
pub async fn stage<C: VaultCluster>(cluster: &C) -> Result<Stage, MigrateError> {
    let nodes = cluster.nodes().await?;
    let Some(node) = nodes.first() else {
        return Ok(Stage::Unreachable);
    };
    match seal_status_when_up(node, Duration::from_secs(5)).await {
        Ok(s) if s.storage() == StorageKind::Raft => Ok(Stage::Raft {
            initialized: s.initialized,
        }),
        Ok(_) => Ok(Stage::FileStorage),
        Err(_) => Ok(Stage::Unreachable),
    }
}

/// Phase 2 (or a one-node raft cluster growing to `replicas`, without a
/// checkpoint): unseal, join, verify, delete the checkpoint.
///
/// # Guarantees
/// Never initializes: an uninitialized pod 0 is [`MigrateError::RaftEmpty`].
/// Unseals with the stored current generation only. The checkpoint is
/// deleted only after the voters, the sentinel and the stored generation
/// were verified.
pub async fn finish<C, S>(
    cluster: &C,
    store: &S,
    replicas: u8,
    timeouts: &Timeouts,
) -> Result<FinishReport, MigrateError>
where
    C: VaultCluster,
    S: CredentialStore,
{
    let credentials = stored(store).await?;
    let checkpoint = pending(store).await?;
    let migration = match checkpoint.as_ref().map(|c| &c.phase) {
        Some(Phase::AwaitingRaftValues { migration }) => Some(migration.clone()),
        Some(p) => return Err(MigrateError::NotPrepared { phase: p.name() }),
        None => None,
    };
    let wanted = migration.as_ref().map_or(replicas, |m| m.replicas) as usize;
    let nodes = cluster.nodes().await?;
    let Some(first) = nodes.first() else {
        return Err(ClusterError::List("no pods".into()).into());
    };
    let status = seal_status_when_up(first, timeouts.pod_appear)
        .await
        .map_err(node_err("read the seal status", first))?;
    if status.storage() != StorageKind::Raft {
        return Err(MigrateError::AwaitingValues {
            pod: first.name().to_owned(),
        });
    }
    if !status.initialized {
        return match migration {
            Some(m) => Err(MigrateError::RaftEmpty {
                pod: first.name().to_owned(),
                backup: m.backup,
            }),
            None => Err(MigrateError::NotInitialized {
                pod: first.name().to_owned(),
            }),
        };
    }
    fail::fail_point!("migrate::before_reconcile");
    let report = match reconcile(cluster, &Keyring::of(&credentials), timeouts).await {
        Err(ReconcileError::Unseal(UnsealError::StillSealed { pod, .. }))
            if pod != first.name() =>
        {
            return Err(MigrateError::PeerUnreachable { pod });
        }
        Err(ReconcileError::PeersIncomplete { missing, .. }) if !missing.is_empty() => {
            return Err(MigrateError::PeerUnreachable {
                pod: missing.join(", "),
            });
        }
        other => other?,
    };
    fail::fail_point!("migrate::after_reconcile");
    let nodes = cluster.nodes().await?;
    let leader = nodes
        .iter()
        .find(|n| n.name() == report.leader)
        .unwrap_or(first);
    // Autopilot promotes a joined node to voter once it is stable (10 s by
    // default): wait for that, within the peers deadline.
    let deadline = std::time::Instant::now() + timeouts.peers;
    let (peers, voters) = loop {
        let peers = raft_peers(leader, &credentials.root_token)
            .await
            .map_err(node_err("read the raft configuration", leader))?;
        let voters = peers.iter().filter(|p| p.voter).count();
        if voters >= wanted || std::time::Instant::now() > deadline {
            break (peers, voters);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if voters != wanted {
        let missing = nodes
            .iter()
            .map(|n| n.name().to_owned())
            .filter(|n| !peers.iter().any(|p| &p.node_id == n && p.voter))
            .collect();
        return Err(MigrateError::Voters {
            found: voters,
            wanted,
            missing,
        });
    }
    if let Some(m) = &migration {
        let back = sentinel_reads_back(leader, &credentials, &m.sentinel)
            .await
            .map_err(node_err("read the sentinel", leader))?;
        if !back {
            return Err(MigrateError::SentinelLost {
                pod: leader.name().to_owned(),
                backup: m.backup.clone(),
            });
        }
        let now = stored(store).await?;
        if now.generation != m.generation || !now.same_secrets(&credentials) {
            return Err(MigrateError::GenerationChanged {
                before: m.generation,
                after: now.generation,
            });
        }
        fail::fail_point!("migrate::before_delete_checkpoint");
        store.delete_checkpoint().await?;
    }
    Ok(FinishReport {
        reconcile: report,
        voters,
        generation: credentials.generation,
    })
}
