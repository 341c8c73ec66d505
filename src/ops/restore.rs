//! `snapshot restore`: put a verified raft snapshot back into a running
//! cluster, then unseal it with the key generation the snapshot needs.
//!
//! Owns the order of the steps, the checkpoint that makes them crash-safe,
//! and the choice of shares (the generation the manifest names, from the
//! credentials history). Verifying the bytes before the first step, and
//! streaming them into the pod, are the caller's [`SnapshotFeed`].
//!
//! # Expected flow
//! 1. Pick the shares for the snapshot's generation; refuse a generation newer
//!    than any stored, or one the history no longer holds. Nothing changed yet.
//! 2. Checkpoint `restore_pending`, then restore on the active node (forced
//!    when the snapshot is from another cluster or another key generation).
//! 3. Checkpoint `restore_applied`; wait for a forced restore to reseal the node.
//! 4. [`reconcile`] with the snapshot generation's shares; delete the checkpoint.
//!
//! # Guarantees
//! The stored credentials are rewritten only when `--credentials` named other
//! credentials (a snapshot of another cluster) and they have just unsealed the
//! restored data. A re-run after a crash at any step boundary finishes: a
//! pending restore whose result is unknown is detected by which shares fit.

use crate::ops::checkpoint::{Checkpoint, Phase, SnapshotRef};
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, NodeError, Request, VaultNode};
use crate::ops::reconcile::{
    reconcile, wait_for_leader, ReconcileError, ReconcileReport, Timeouts,
};
use crate::ops::secret::Secret;
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};
use crate::ops::unseal::UnsealError;
use crate::ops::wait::poll_until;
use std::future::Future;
use std::time::Duration;

/// Streams one snapshot into a node's raft restore endpoint.
pub trait SnapshotFeed<N: VaultNode>: Send + Sync {
    /// Restores into `node`, authenticated by `token`; `force` skips the
    /// server's keyring check (needed across clusters and key generations).
    fn restore_into(
        &self,
        node: &N,
        token: &Secret,
        force: bool,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;
}

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub holder: String,
    pub budget: RetryBudget,
    pub timeouts: Timeouts,
}

#[derive(Debug, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    /// The key generation whose shares unsealed the restored data.
    pub generation: u32,
    pub forced: bool,
    /// Whether the stored credentials were replaced by `--credentials`.
    pub credentials_replaced: bool,
    pub resumed: bool,
    pub reconcile: ReconcileReport,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{object} could not be read: {source}")]
    LoadStore { object: String, source: StoreError },
    #[error("no credentials in {object}: a restore needs a token of the running cluster; run `kubectl vault init` first")]
    NoCredentials { object: String },
    #[error("the snapshot needs key generation {wanted}, newer than any stored (the newest in {object} is {newest}): it was taken after a rotation these credentials never saw. Import the newer credentials first (`kubectl vault credentials import`); nothing was changed")]
    NewerGeneration {
        wanted: u32,
        newest: u32,
        object: String,
    },
    #[error("the snapshot needs key generation {wanted}, but {object} no longer holds it (history: {held:?}); pass --credentials FILE with those shares; nothing was changed")]
    MissingGeneration {
        wanted: u32,
        held: Vec<u32>,
        object: String,
    },
    #[error("{checkpoint} holds an interrupted operation; finish it first with `{resume}`")]
    OtherOperation { checkpoint: String, resume: String },
    #[error("{checkpoint} records a restore of {recorded}, not of {requested}; finish it with `{resume}` and --from naming that snapshot")]
    OtherSnapshot {
        checkpoint: String,
        recorded: String,
        requested: String,
        resume: String,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not write {object}: {source}")]
    Checkpoint { object: String, source: StoreError },
    #[error("the restore on pod {pod} failed: {source}")]
    Apply { pod: String, source: NodeError },
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("the restored data is unsealed, but storing the credentials that unseal it in {object} failed: {source}; the checkpoint keeps the restore resumable, re-run the same command")]
    StoreCredentials { object: String, source: StoreError },
}

/// The credentials whose shares unseal data of key generation `generation`:
/// the stored document itself, or a copy carrying a retired generation's shares.
pub fn for_generation(
    stored: &Credentials,
    generation: u32,
    object: &str,
) -> Result<Credentials, RestoreError> {
    if generation == stored.generation {
        return Ok(stored.clone());
    }
    if generation > stored.generation {
        return Err(RestoreError::NewerGeneration {
            wanted: generation,
            newest: stored.generation,
            object: object.to_owned(),
        });
    }
    let old = stored
        .history
        .iter()
        .find(|g| g.generation == generation)
        .ok_or_else(|| RestoreError::MissingGeneration {
            wanted: generation,
            held: std::iter::once(stored.generation)
                .chain(stored.history.iter().map(|g| g.generation))
                .collect(),
            object: object.to_owned(),
        })?;
    let mut c = stored.clone();
    c.unseal_keys_b64.clone_from(&old.unseal_keys_b64);
    c.key_threshold = old.key_threshold;
    c.key_shares = old.key_shares;
    c.generation = old.generation;
    c.history.clear();
    Ok(c)
}

/// True when `token` is accepted by `node` (a read of its own token).
pub async fn token_works(node: &impl VaultNode, token: &Secret) -> bool {
    node.call(Request::read("auth/token/lookup-self").with_token(token))
        .await
        .is_ok()
}

/// After a forced restore the node seals itself to take up the snapshot's
/// keyring; waits (bounded) until it has, or until `token` works (no reseal
/// was needed).
pub async fn wait_for_reseal(node: &impl VaultNode, token: &Secret, timeout: Duration) {
    let settled = poll_until(timeout, Duration::from_millis(300), || async {
        match seal_status(node).await {
            Ok(s) if s.sealed => Some(()),
            Ok(_) if token_works(node, token).await => Some(()),
            _ => None,
        }
    })
    .await;
    if settled.is_none() {
        tracing::warn!(
            pod = node.name(),
            "the node neither resealed nor accepts the snapshot's token yet; going on"
        );
    }
}

/// Runs `snapshot restore` to completion (or resumes it).
///
/// `source_cluster_id` is the manifest's; `explicit` holds `--credentials`
/// for a snapshot of another cluster.
pub async fn run<C, F>(
    cluster: &C,
    store: &impl CredentialStore,
    feed: &F,
    snapshot: &SnapshotRef,
    source_cluster_id: &str,
    explicit: Option<&Credentials>,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError>
where
    C: VaultCluster,
    F: SnapshotFeed<C::Node>,
{
    let stored = store
        .load_credentials()
        .await
        .map_err(|source| RestoreError::LoadStore {
            object: store.credentials_object(),
            source,
        })?
        .ok_or_else(|| RestoreError::NoCredentials {
            object: store.credentials_object(),
        })?;
    let checkpoint = store
        .load_checkpoint()
        .await
        .map_err(|source| RestoreError::LoadStore {
            object: store.checkpoint_object(),
            source,
        })?;
    let unseal_with = match explicit {
        Some(c) => c.clone(),
        None => for_generation(&stored, snapshot.generation, &store.credentials_object())?,
    };
    let resume = match checkpoint.as_ref().map(|c| (&c.phase, c.resume_command())) {
        None => None,
        Some((
            Phase::RestorePending { snapshot: s }
            | Phase::RestoreApplied {
                snapshot: s,
                recover: false,
            },
            resume,
        )) => {
            if s.sha256 != snapshot.sha256 {
                return Err(RestoreError::OtherSnapshot {
                    checkpoint: store.checkpoint_object(),
                    recorded: format!("{} ({})", s.name, s.location),
                    requested: snapshot.name.clone(),
                    resume: resume.to_owned(),
                });
            }
            checkpoint.as_ref().map(|c| c.phase.clone())
        }
        Some((_, resume)) => {
            return Err(RestoreError::OtherOperation {
                checkpoint: store.checkpoint_object(),
                resume: resume.to_owned(),
            })
        }
    };
    let nodes = cluster.nodes().await?;
    let leader_status = match nodes.first() {
        Some(n) => seal_status(n).await.ok(),
        None => None,
    };
    let current_cluster = leader_status.map(|s| s.cluster_id).unwrap_or_default();
    let forced = explicit.is_some()
        || unseal_with.generation != stored.generation
        || (!source_cluster_id.is_empty() && source_cluster_id != current_cluster);
    let resumed = resume.is_some();

    let mut applied = matches!(resume, Some(Phase::RestoreApplied { .. }));
    if let Some(Phase::RestorePending { .. }) = resume {
        // Unknown whether the restore happened: the shares that fit tell.
        applied = match reconcile(
            cluster,
            &crate::ops::keyring::Keyring::of(&stored),
            &opts.timeouts,
        )
        .await
        {
            Ok(_) => false,
            Err(ReconcileError::Unseal(UnsealError::Rejected { .. })) => true,
            Err(e) => return Err(e.into()),
        };
        tracing::info!(applied, "resuming an interrupted restore");
    }
    if !applied {
        let pending = Checkpoint::new(
            &opts.holder,
            Phase::RestorePending {
                snapshot: snapshot.clone(),
            },
        );
        save_checkpoint::<RestoreError>(store, &pending, opts.budget).await?;
        fail::fail_point!("restore::after_pending_checkpoint");
        let (leader_pod, _) = wait_for_leader(&nodes, opts.timeouts.leader).await?;
        let leader = nodes
            .iter()
            .find(|n| n.name() == leader_pod)
            .ok_or_else(|| ClusterError::List(format!("pod {leader_pod} vanished")))?;
        tracing::info!(pod = %leader_pod, forced, snapshot = %snapshot.name, "restoring");
        feed.restore_into(leader, &stored.root_token, forced)
            .await
            .map_err(|source| RestoreError::Apply {
                pod: leader_pod.clone(),
                source,
            })?;
        fail::fail_point!("restore::after_apply");
        let done = Checkpoint::new(
            &opts.holder,
            Phase::RestoreApplied {
                snapshot: snapshot.clone(),
                recover: false,
            },
        );
        save_checkpoint::<RestoreError>(store, &done, opts.budget).await?;
        fail::fail_point!("restore::after_applied_checkpoint");
        if forced {
            wait_for_reseal(leader, &unseal_with.root_token, Duration::from_secs(30)).await;
        }
    }
    tracing::info!(
        generation = unseal_with.generation,
        "unsealing with the snapshot's key generation"
    );
    let report = reconcile(
        cluster,
        &crate::ops::keyring::Keyring::of(&unseal_with),
        &opts.timeouts,
    )
    .await?;
    fail::fail_point!("restore::after_unseal");
    let mut credentials_replaced = false;
    if explicit.is_some() && !unseal_with.same_secrets(&stored) {
        let mut replacement = unseal_with.clone();
        replacement.cluster_id.clone_from(&report.cluster_id);
        persist(store, Record::Credentials(&replacement), opts.budget)
            .await
            .map_err(|source| RestoreError::StoreCredentials {
                object: store.credentials_object(),
                source,
            })?;
        credentials_replaced = true;
    }
    store
        .delete_checkpoint()
        .await
        .map_err(|source| RestoreError::Checkpoint {
            object: store.checkpoint_object(),
            source,
        })?;
    Ok(RestoreReport {
        snapshot: snapshot.name.clone(),
        generation: unseal_with.generation,
        forced,
        credentials_replaced,
        resumed,
        reconcile: report,
    })
}

pub(crate) async fn save_checkpoint<E>(
    store: &impl CredentialStore,
    checkpoint: &Checkpoint,
    budget: RetryBudget,
) -> Result<(), E>
where
    E: From<CheckpointWriteError>,
{
    persist(store, Record::Checkpoint(checkpoint), budget)
        .await
        .map_err(|source| {
            E::from(CheckpointWriteError {
                object: store.checkpoint_object(),
                source,
            })
        })
}

/// A checkpoint write that failed within its budget.
#[derive(Debug)]
pub struct CheckpointWriteError {
    pub object: String,
    pub source: StoreError,
}

impl From<CheckpointWriteError> for RestoreError {
    fn from(e: CheckpointWriteError) -> Self {
        RestoreError::Checkpoint {
            object: e.object,
            source: e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::credentials::{sample, KeyGeneration};

    #[test]
    fn picks_the_generation_the_snapshot_needs() {
        let mut c = sample(3, 2);
        c.generation = 3;
        c.history = vec![KeyGeneration {
            generation: 2,
            unseal_keys_b64: vec![Secret::new("old-0")],
            key_threshold: 1,
            key_shares: 1,
            retired_at: "2026-11-24T00:00:00Z".into(),
        }];
        assert_eq!(for_generation(&c, 3, "s").unwrap().generation, 3);
        let old = for_generation(&c, 2, "s").unwrap();
        assert_eq!(old.unseal_shares().len(), 1);
        assert_eq!(old.unseal_keys_b64[0].expose(), "old-0");
        assert!(matches!(
            for_generation(&c, 4, "s"),
            Err(RestoreError::NewerGeneration {
                wanted: 4,
                newest: 3,
                ..
            })
        ));
        assert!(matches!(
            for_generation(&c, 1, "s"),
            Err(RestoreError::MissingGeneration { wanted: 1, .. })
        ));
    }
}
