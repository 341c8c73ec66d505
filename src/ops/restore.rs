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

use crate::ops::checkpoint::{Checkpoint, Phase, SnapshotRef};
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::converge::{converge, ConvergeError, PodReading, ServerRestart};
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

/// The credentials whose shares unseal data of key generation `generation`
/// taken from cluster `cluster_id` (empty: unknown): the stored document
/// itself, or a copy carrying a retired generation's shares and token.
/// Where two clusters' generations share a number (after a restore with
/// `--credentials`), the one recorded for `cluster_id` wins.
pub fn for_generation(
    stored: &Credentials,
    generation: u32,
    cluster_id: &str,
    object: &str,
) -> Result<Credentials, RestoreError> {
    let current = stored.retire();
    let candidates: Vec<_> = std::iter::once(&current)
        .chain(&stored.history)
        .filter(|g| g.generation == generation)
        .collect();
    let same_cluster = |id: &str| !id.is_empty() && !cluster_id.is_empty() && id == cluster_id;
    let Some(chosen) = candidates
        .iter()
        .find(|g| same_cluster(&g.cluster_id))
        .or_else(|| candidates.first())
    else {
        let newest = stored.newest_generation();
        if generation > newest {
            return Err(RestoreError::NewerGeneration {
                wanted: generation,
                newest,
                object: object.to_owned(),
            });
        }
        return Err(RestoreError::MissingGeneration {
            wanted: generation,
            held: std::iter::once(stored.generation)
                .chain(stored.history.iter().map(|g| g.generation))
                .collect(),
            object: object.to_owned(),
        });
    };
    let mut c = stored.clone();
    c.unseal_keys_b64.clone_from(&chosen.unseal_keys_b64);
    c.recovery_keys_b64.clone_from(&chosen.recovery_keys_b64);
    c.key_threshold = chosen.key_threshold;
    c.key_shares = chosen.key_shares;
    c.generation = chosen.generation;
    if let Some(t) = &chosen.root_token {
        c.root_token = t.clone();
    }
    c.history.clear();
    Ok(c)
}

/// The first of `candidates` that `node` accepts, retried for a few seconds
/// (a node that just became active may not serve tokens yet).
pub async fn working_token(node: &impl VaultNode, candidates: &[Secret]) -> Option<Secret> {
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(500),
        || async {
            for t in candidates {
                if token_works(node, t).await {
                    return Some(t.clone());
                }
            }
            None
        },
    )
    .await
}

/// What to store after a restore, or `None` when the stored document is
/// already right. The current credentials become the restored data's
/// (`restored`'s shares and generation, `token` when one works); what was
/// current moves into the history. With `explicit` (`--credentials`) the
/// explicit document becomes current and the whole stored one, history
/// included, moves into the history. Nothing is dropped.
pub fn adopt(
    stored: &Credentials,
    explicit: Option<&Credentials>,
    restored: &Credentials,
    token: Option<&Secret>,
    cluster_id: &str,
) -> Option<Credentials> {
    let base = explicit.unwrap_or(stored);
    let mut next = Credentials {
        schema: crate::ops::credentials::CREDENTIALS_SCHEMA,
        seal: restored.seal.clone(),
        root_token: token
            .cloned()
            .unwrap_or_else(|| restored.root_token.clone()),
        unseal_keys_b64: restored.unseal_keys_b64.clone(),
        recovery_keys_b64: restored.recovery_keys_b64.clone(),
        key_threshold: restored.key_threshold,
        key_shares: restored.key_shares,
        generation: restored.generation,
        cluster_id: if explicit.is_some() || base.cluster_id.is_empty() {
            cluster_id.to_owned()
        } else {
            base.cluster_id.clone()
        },
        created_at: base.created_at.clone(),
        server_version: base.server_version.clone(),
        history: base.history.clone(),
    };
    match explicit {
        Some(_) => {
            next.push_history(std::iter::once(stored.retire()).chain(stored.history.clone()))
        }
        None => next.push_history([stored.retire()]),
    }
    (!next.same_secrets_and_history(stored)).then_some(next)
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

/// After a refused stream: the node is unsealed and still accepts the token
/// of the data it had, so nothing was applied.
async fn still_serves(node: &impl VaultNode, token: &Secret) -> bool {
    matches!(seal_status(node).await, Ok(s) if !s.sealed) && token_works(node, token).await
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

    fn entry(generation: u32, share: &str, token: Option<&str>, cluster: &str) -> KeyGeneration {
        KeyGeneration {
            recovery_keys_b64: vec![],
            generation,
            unseal_keys_b64: vec![Secret::new(share)],
            key_threshold: 1,
            key_shares: 1,
            retired_at: "2026-11-24T00:00:00Z".into(),
            root_token: token.map(Secret::new),
            cluster_id: cluster.into(),
        }
    }

    #[test]
    fn picks_the_generation_the_snapshot_needs() {
        let mut c = sample(3, 2);
        c.generation = 3;
        c.history = vec![entry(2, "old-0", None, "")];
        assert_eq!(for_generation(&c, 3, "", "s").unwrap().generation, 3);
        let old = for_generation(&c, 2, "", "s").unwrap();
        assert_eq!(old.unseal_shares().len(), 1);
        assert_eq!(old.unseal_keys_b64[0].expose(), "old-0");
        assert_eq!(
            old.root_token.expose(),
            "s.root",
            "no token recorded: the current one"
        );
        assert!(matches!(
            for_generation(&c, 4, "", "s"),
            Err(RestoreError::NewerGeneration {
                wanted: 4,
                newest: 3,
                ..
            })
        ));
        assert!(matches!(
            for_generation(&c, 1, "", "s"),
            Err(RestoreError::MissingGeneration { wanted: 1, .. })
        ));
    }

    #[test]
    fn a_generation_of_the_snapshots_cluster_wins_over_a_same_numbered_one() {
        let mut c = sample(1, 1);
        c.cluster_id = "src".into();
        c.history = vec![entry(1, "target-share", Some("t-target"), "target")];
        let picked = for_generation(&c, 1, "target", "s").unwrap();
        assert_eq!(picked.unseal_keys_b64[0].expose(), "target-share");
        assert_eq!(picked.root_token.expose(), "t-target");
        let picked = for_generation(&c, 1, "src", "s").unwrap();
        assert_eq!(picked.unseal_keys_b64[0].expose(), "share-0");
    }

    #[test]
    fn adopting_an_older_generation_keeps_every_key_and_token() {
        // Generation 2 current with token t2b; generation 1 and an older
        // token of generation 2 in the history.
        let mut stored = sample(1, 1);
        stored.generation = 2;
        stored.root_token = Secret::new("t2b");
        stored.unseal_keys_b64 = vec![Secret::new("g2")];
        stored.history = vec![
            entry(2, "g2", Some("t2a"), "c1"),
            entry(1, "g1", Some("t1"), "c1"),
        ];
        let restored = for_generation(&stored, 1, "c1", "s").unwrap();
        let token = Secret::new("t1");
        let next = adopt(&stored, None, &restored, Some(&token), "c1").unwrap();
        assert_eq!(next.generation, 1);
        assert_eq!(next.unseal_keys_b64[0].expose(), "g1");
        assert_eq!(next.root_token.expose(), "t1");
        let held: Vec<(u32, String)> = next
            .history
            .iter()
            .map(|g| {
                (
                    g.generation,
                    g.root_token.as_ref().unwrap().expose().to_owned(),
                )
            })
            .collect();
        assert_eq!(held, [(2, "t2b".into()), (2, "t2a".into())]);
        // Adopting what is already current changes nothing.
        assert!(adopt(&next, None, &next, Some(&token), "c1").is_none());
    }

    #[test]
    fn explicit_credentials_move_the_whole_replaced_document_into_the_history() {
        let mut stored = sample(1, 1);
        stored.cluster_id = "target".into();
        stored.root_token = Secret::new("t-target");
        stored.history = vec![entry(0, "g0", Some("t0"), "target")];
        let mut explicit = sample(1, 1);
        explicit.unseal_keys_b64 = vec![Secret::new("src-share")];
        explicit.root_token = Secret::new("t-src");
        let next = adopt(
            &stored,
            Some(&explicit),
            &explicit,
            Some(&explicit.root_token),
            "src",
        )
        .unwrap();
        assert_eq!(next.unseal_keys_b64[0].expose(), "src-share");
        assert_eq!(next.cluster_id, "src");
        assert_eq!(next.history.len(), 2, "{:?}", next.history);
        assert_eq!(next.history[0].cluster_id, "target");
        assert_eq!(next.history[0].unseal_keys_b64[0].expose(), "share-0");
        assert_eq!(next.history[1].generation, 0);
    }
}
