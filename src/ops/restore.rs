//! `snapshot restore`: put a verified raft snapshot back into a running
//! cluster, then unseal it with the key generation the snapshot needs.
//!
//! Owns the order of the steps, the checkpoint that makes them crash-safe,
//! the choice of shares (the generation the manifest names, from the
//! credentials history) and of the root token (the stored one the restored
//! data accepts), and what is stored afterwards. Verifying the bytes before
//! the first step, and streaming them into the pod, are the caller's
//! [`SnapshotFeed`].
//!
//! # Expected flow
//! 1. Pick the shares for the snapshot's generation; refuse a generation newer
//!    than any stored, or one the history no longer holds. Nothing changed yet.
//! 2. Checkpoint `restore_pending`, then restore on the active node (forced
//!    when the snapshot is from another cluster or another key generation).
//!    A server that refuses the stream, and still serves the old data, ends
//!    the run: the checkpoint is removed and nothing changed.
//! 3. Checkpoint `restore_applied`; wait for a forced restore to reseal the node.
//! 4. [`reconcile`] with the snapshot generation's shares.
//! 5. Find the stored root token the restored data accepts; [`converge`]
//!    every pod onto the restored keyring (a read on each pod proves it).
//! 6. Store what the restored data needs as the current credentials (its
//!    shares and token), moving what was current into the history; then
//!    delete the checkpoint.
//!
//! # Guarantees
//! Nothing stored is ever dropped: the replaced current credentials, and with
//! `--credentials` the whole replaced document, move into the history. The
//! credentials are written only after the restored data was unsealed by
//! them. A re-run after a crash at any step boundary finishes: a pending
//! restore whose result is unknown is detected by which shares fit.
//!
//! Here the steps and their types; by noun: `generation` (which stored
//! credentials the snapshot needs, what is stored after it), `probe` (what
//! a node tells after a restore) and `checkpoint_write`.

use crate::ops::checkpoint::{Checkpoint, Phase, SnapshotRef};
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::converge::{converge, ConvergeError, PodReading, ServerRestart};
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, NodeError, VaultNode};
use crate::ops::reconcile::{
    reconcile, wait_for_leader, ReconcileError, ReconcileReport, Timeouts,
};
use crate::ops::secret::Secret;
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};
use crate::ops::unseal::UnsealError;
use std::future::Future;
use std::time::Duration;

mod checkpoint_write;
mod generation;
mod probe;

pub(crate) use checkpoint_write::save_checkpoint;
pub use checkpoint_write::CheckpointWriteError;
pub use generation::{adopt, for_generation};
use probe::still_serves;
pub use probe::{token_works, wait_for_reseal, working_token};

/// Streams one snapshot into a node's raft restore endpoint.
pub trait SnapshotFeed<N: VaultNode>: Send + Sync {
    /// Restores into `node`, authenticated by `token`; `force` skips the
    /// server's keyring check (needed across clusters and key generations).
    fn restore_into(
        &self,
        node: &N,
        token: &Secret,
        force: bool,
    ) -> impl Future<Output = Result<(), FeedError>> + Send;
}

/// Why a snapshot stream did not end in a restore.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The server answered with an error, or the stream was cut on purpose
    /// before its end (its bytes differed from the manifest): the server
    /// had no complete snapshot to apply.
    #[error("the snapshot was refused: {0}")]
    Rejected(NodeError),
    /// The stream broke or ran out of time: whether the restore happened is
    /// unknown.
    #[error(transparent)]
    Interrupted(NodeError),
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
    /// Whether the stored current credentials changed (to the restored
    /// generation or token; what was current moved into the history).
    pub credentials_updated: bool,
    /// Whether a stored root token is valid in the restored data.
    pub root_token_valid: bool,
    pub resumed: bool,
    pub reconcile: ReconcileReport,
    /// Every pod, and what it took to make it read through the restored keyring.
    pub pods: Vec<PodReading>,
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
    #[error("{checkpoint} records a restore of {recorded}, not of {requested}; finish it with `{resume}`")]
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
    #[error("pod {pod} refused the snapshot ({source}); it still serves the data it had, and the restore checkpoint was removed: nothing was changed. Check the snapshot with `kubectl vault snapshot verify`")]
    Rejected { pod: String, source: NodeError },
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Converge(#[from] ConvergeError),
    #[error("the restored data is unsealed, but storing the credentials that unseal it in {object} failed: {source}; the checkpoint keeps the restore resumable, re-run the same command")]
    StoreCredentials { object: String, source: StoreError },
}

/// Runs `snapshot restore` to completion (or resumes it).
///
/// `source_cluster_id` is the manifest's; `explicit` holds `--credentials`
/// for a snapshot of another cluster.
#[allow(clippy::too_many_arguments)]
pub async fn run<C, F, R>(
    cluster: &C,
    store: &impl CredentialStore,
    feed: &F,
    restart: &R,
    snapshot: &SnapshotRef,
    source_cluster_id: &str,
    explicit: Option<&Credentials>,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError>
where
    C: VaultCluster,
    F: SnapshotFeed<C::Node>,
    R: ServerRestart,
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
        None => for_generation(
            &stored,
            snapshot.generation,
            source_cluster_id,
            &store.credentials_object(),
        )?,
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
        match feed.restore_into(leader, &stored.root_token, forced).await {
            Ok(()) => {}
            Err(FeedError::Rejected(source)) if still_serves(leader, &stored.root_token).await => {
                store
                    .delete_checkpoint()
                    .await
                    .map_err(|source| RestoreError::Checkpoint {
                        object: store.checkpoint_object(),
                        source,
                    })?;
                return Err(RestoreError::Rejected {
                    pod: leader_pod,
                    source,
                });
            }
            Err(FeedError::Rejected(source) | FeedError::Interrupted(source)) => {
                return Err(RestoreError::Apply {
                    pod: leader_pod,
                    source,
                })
            }
        }
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
    let leader = nodes
        .iter()
        .find(|n| n.name() == report.leader)
        .or(nodes.first());
    let candidates = explicit
        .unwrap_or(&stored)
        .root_tokens_for(unseal_with.generation);
    let token = match leader {
        Some(n) => working_token(n, &candidates).await,
        None => None,
    };
    if token.is_none() {
        tracing::warn!("no stored root token is valid in the restored data");
    }
    let pods = converge(
        cluster,
        restart,
        &unseal_with,
        token.as_ref(),
        opts.timeouts.pod_appear,
    )
    .await?;
    let adopted = adopt(
        &stored,
        explicit,
        &unseal_with,
        token.as_ref(),
        &report.cluster_id,
    );
    let credentials_updated = adopted.is_some();
    if let Some(next) = &adopted {
        persist(store, Record::Credentials(next), opts.budget)
            .await
            .map_err(|source| RestoreError::StoreCredentials {
                object: store.credentials_object(),
                source,
            })?;
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
        credentials_replaced: explicit.is_some() && credentials_updated,
        credentials_updated,
        root_token_valid: token.is_some(),
        resumed,
        reconcile: report,
        pods,
    })
}
