//! `recover`: bring back a cluster whose data was lost while its keys
//! survived, from a verified snapshot, without ever dropping a stored key.
//!
//! Owns the decision (no pod initialized + stored credentials + a verified
//! snapshot) and the steps. Choosing and verifying the snapshot, and the lock,
//! are the caller's.
//!
//! # Expected flow
//! 1. Checkpoint `recover_pending` (proves the store is writable).
//! 2. Temporarily initialize pod 0 with the share count and threshold of the
//!    snapshot's key generation: after a forced restore the node keeps the
//!    seal configuration of its own init in memory, so a 1-of-1 temporary init
//!    would take the first stored share for a whole key. The transport keeps
//!    a pod-local copy of the answer until step 3 stored it.
//! 3. Checkpoint `recover_temp_init` with the temporary keys.
//! 4. Unseal pod 0 with them and wait for it to lead.
//! 5. Force-restore the snapshot with the temporary root token.
//! 6. Checkpoint `restore_applied` (the temporary keys are dropped).
//! 7. [`reconcile`] with the stored shares of the snapshot's generation
//!    (pod 0 reseals with the snapshot's keyring; the others join). On an
//!    auto-unseal cluster pod 0 is restarted first and unseals itself from
//!    the restored data; nothing is submitted to `sys/unseal`.
//! 8. Find the stored root token the restored data accepts; [`converge`]
//!    every pod onto the restored keyring (a read on each pod proves it).
//! 9. When the snapshot's generation or token is not the stored current one,
//!    store them as current (what was current moves into the history);
//!    delete the checkpoint.
//!
//! # Why the temporary keys go into the checkpoint
//! Between steps 2 and 5 pod 0 is initialized with keys that exist nowhere
//! else; a crash there would leave a cluster nobody can unseal, and the only
//! way out would be wiping pod 0 again. The temporary keys guard an empty
//! barrier that the restore is about to replace, so keeping them in the
//! checkpoint Secret (next to, never in place of, the stored credentials)
//! costs nothing and lets a re-run finish. They are dropped at step 6.
//!
//! # Guarantees
//! The stored credentials are only read. With no verified snapshot nothing
//! is initialized. Every re-run after a crash at a step boundary finishes.

use crate::ops::checkpoint::{Checkpoint, Phase, SnapshotRef};
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::converge::{converge, ConvergeError, PodReading, ServerRestart};
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status_when_up, NodeError, Request, SealStatus, VaultNode};
use crate::ops::reconcile::{reconcile, wait_for_leader, ReconcileError, ReconcileReport};
use crate::ops::restore::{
    adopt, for_generation, save_checkpoint, token_works, wait_for_reseal, working_token,
    CheckpointWriteError, FeedError, RestoreError, RestoreOptions, SnapshotFeed,
};
use crate::ops::secret::SecretBytes;
use crate::ops::store::{persist, CredentialStore, Record, StoreError};
use crate::ops::unseal::{unseal_node, UnsealError};
use std::time::Duration;

#[derive(Debug, serde::Serialize)]
pub struct RecoverReport {
    pub snapshot: String,
    pub generation: u32,
    pub resumed: bool,
    /// Whether the stored current credentials changed to the snapshot's
    /// generation or token (what was current moved into the history).
    pub credentials_updated: bool,
    pub reconcile: ReconcileReport,
    pub pods: Vec<PodReading>,
    /// Auto-unseal: whether the restored data accepts the stored recovery
    /// keys, asked by a probe rotation that is cancelled before it can
    /// change anything. `None` on Shamir, or when no recovery keys are
    /// stored; `Some(false)` means root generation and recovery-key
    /// rotation will need other keys.
    pub recovery_keys_accepted: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{object} could not be read: {source}")]
    LoadStore { object: String, source: StoreError },
    #[error("no credentials in {object}: there are no keys to recover with. For a fresh cluster run `kubectl vault init`")]
    NoCredentials { object: String },
    #[error("pod {pod} is initialized: there is nothing to recover. Unseal with `kubectl vault unseal`, join with `kubectl vault join`, or restore into the running cluster with `kubectl vault snapshot restore`")]
    AlreadyInitialized { pod: String },
    #[error(transparent)]
    Generation(RestoreError),
    #[error("{checkpoint} holds another interrupted operation; finish it first with `{resume}`")]
    OtherOperation { checkpoint: String, resume: String },
    #[error(
        "{checkpoint} records a recover from {recorded}, which may already be applied; finish it with `{resume}`"
    )]
    OtherSnapshot {
        checkpoint: String,
        recorded: String,
        resume: String,
    },
    #[error("pod {pod} was initialized by an interrupted recover, but its temporary keys were lost (neither the checkpoint nor the pod-local copy holds them); delete pod {pod}'s data (its PVC) and re-run `kubectl vault recover`")]
    TemporaryKeysLost { pod: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not read the seal status of pod {pod}: {source}")]
    ReadStatus { pod: String, source: NodeError },
    #[error("could not write {object}: {source}")]
    Checkpoint { object: String, source: StoreError },
    #[error("the temporary sys/init on pod {pod} failed: {source}")]
    TemporaryInit { pod: String, source: NodeError },
    #[error("could not unseal pod {pod} with the temporary keys: {source}")]
    TemporaryUnseal { pod: String, source: UnsealError },
    #[error("the restore on pod {pod} failed: {source}")]
    Apply { pod: String, source: NodeError },
    #[error("pod {pod} refused the snapshot ({source}); nothing was restored. Re-run `kubectl vault recover` with --from naming another snapshot (`kubectl vault snapshot verify` checks one): the interrupted recover continues with it")]
    Rejected { pod: String, source: NodeError },
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Converge(#[from] ConvergeError),
    #[error("the cluster is unsealed but no stored root token is valid in the restored data (read on pod {pod}); check `kubectl vault status`")]
    VerifyRead { pod: String },
    #[error("the restored data is unsealed, but storing the credentials that unseal it in {object} failed: {source}; the checkpoint keeps the recover resumable, re-run the same command")]
    StoreCredentials { object: String, source: StoreError },
}

/// Refuses a recover when any pod is initialized: there is nothing to
/// recover. Runs before any snapshot is looked for, so a healthy cluster
/// gets this answer whatever `--from` holds.
pub async fn ensure_nothing_initialized<C: VaultCluster>(
    cluster: &C,
    opts: &RestoreOptions,
) -> Result<(), RecoverError> {
    let nodes = cluster.nodes().await?;
    let statuses = statuses(&nodes, opts).await?;
    match nodes.iter().zip(&statuses).find(|(_, s)| s.initialized) {
        Some((n, _)) => Err(RecoverError::AlreadyInitialized {
            pod: n.name().to_owned(),
        }),
        None => Ok(()),
    }
}

impl From<CheckpointWriteError> for RecoverError {
    fn from(e: CheckpointWriteError) -> Self {
        RecoverError::Checkpoint {
            object: e.object,
            source: e.source,
        }
    }
}

/// The snapshot an interrupted recover was working from, so the caller opens
/// the same one.
pub fn pending_snapshot(checkpoint: Option<&Checkpoint>) -> Option<&SnapshotRef> {
    match &checkpoint?.phase {
        Phase::RecoverPending { snapshot }
        | Phase::RecoverTempInit { snapshot, .. }
        | Phase::RestoreApplied {
            snapshot,
            recover: true,
        } => Some(snapshot),
        _ => None,
    }
}

/// True when the interrupted recover has not applied its snapshot yet, so
/// that a re-run may continue with another one.
pub fn snapshot_replaceable(checkpoint: Option<&Checkpoint>) -> bool {
    matches!(
        checkpoint.map(|c| &c.phase),
        Some(Phase::RecoverPending { .. } | Phase::RecoverTempInit { .. })
    )
}

/// Where a run starts.
enum Start {
    Fresh,
    TempInit(Box<Credentials>),
    Applied,
}

pub async fn run<C, F, R>(
    cluster: &C,
    store: &impl CredentialStore,
    feed: &F,
    restart: &R,
    snapshot: &SnapshotRef,
    opts: &RestoreOptions,
) -> Result<RecoverReport, RecoverError>
where
    C: VaultCluster,
    F: SnapshotFeed<C::Node>,
    R: ServerRestart,
{
    let stored = store
        .load_credentials()
        .await
        .map_err(|source| RecoverError::LoadStore {
            object: store.credentials_object(),
            source,
        })?
        .ok_or_else(|| RecoverError::NoCredentials {
            object: store.credentials_object(),
        })?;
    let unseal_with = for_generation(
        &stored,
        snapshot.generation,
        &stored.cluster_id,
        &store.credentials_object(),
    )
    .map_err(RecoverError::Generation)?;
    let checkpoint = store
        .load_checkpoint()
        .await
        .map_err(|source| RecoverError::LoadStore {
            object: store.checkpoint_object(),
            source,
        })?;
    let nodes = cluster.nodes().await?;
    let first = nodes
        .first()
        .ok_or_else(|| ClusterError::List("no pods".into()))?
        .clone();
    let statuses = statuses(&nodes, opts).await?;

    let start = match checkpoint.as_ref().map(|c| (&c.phase, c.resume_command())) {
        None => {
            if let Some((n, _)) = nodes.iter().zip(&statuses).find(|(_, s)| s.initialized) {
                return Err(RecoverError::AlreadyInitialized {
                    pod: n.name().to_owned(),
                });
            }
            Start::Fresh
        }
        Some((phase, _)) if pending_snapshot(checkpoint.as_ref()).is_some() => {
            let recorded = pending_snapshot(checkpoint.as_ref())
                .cloned()
                .unwrap_or_else(|| snapshot.clone());
            // Until its restore is applied, an interrupted recover may go on
            // with another snapshot (its own was refused, or is gone).
            let switching = recorded.sha256 != snapshot.sha256;
            let other = || RecoverError::OtherSnapshot {
                checkpoint: store.checkpoint_object(),
                resume: checkpoint
                    .as_ref()
                    .map(|c| c.resume_command())
                    .unwrap_or_default(),
                recorded: format!(
                    "{}/{}",
                    recorded.location.trim_end_matches('/'),
                    recorded.name
                ),
            };
            if switching && !snapshot_replaceable(checkpoint.as_ref()) {
                return Err(other());
            }
            tracing::info!(checkpoint = %store.checkpoint_object(), switching, "resuming an interrupted recover");
            match phase {
                Phase::RecoverPending { .. } if !statuses[0].initialized => Start::Fresh,
                Phase::RecoverPending { .. } => match recover_copy(&first, &unseal_with).await? {
                    Some(temp) => {
                        store_temporary(store, snapshot, &temp, opts).await?;
                        clear_copy(&first).await;
                        Start::TempInit(Box::new(temp))
                    }
                    None => {
                        return Err(RecoverError::TemporaryKeysLost {
                            pod: first.name().to_owned(),
                        })
                    }
                },
                Phase::RecoverTempInit { temporary, .. } => {
                    if restore_happened(&first, temporary, &statuses[0]).await {
                        if switching {
                            return Err(other());
                        }
                        mark_applied(store, snapshot, opts).await?;
                        Start::Applied
                    } else {
                        if switching {
                            store_temporary(store, snapshot, temporary, opts).await?;
                        }
                        Start::TempInit(Box::new(temporary.clone()))
                    }
                }
                _ => Start::Applied,
            }
        }
        Some((_, resume)) => {
            return Err(RecoverError::OtherOperation {
                checkpoint: store.checkpoint_object(),
                resume: resume.to_owned(),
            })
        }
    };
    let resumed = !matches!(start, Start::Fresh) || checkpoint.is_some();

    let temp = match start {
        Start::Applied => None,
        Start::TempInit(temp) => Some(*temp),
        Start::Fresh => {
            let pending = Checkpoint::new(
                &opts.holder,
                Phase::RecoverPending {
                    snapshot: snapshot.clone(),
                },
            );
            save_checkpoint::<RecoverError>(store, &pending, opts.budget).await?;
            fail::fail_point!("recover::after_preflight");
            let temp = temporary_init(&first, &unseal_with).await?;
            fail::fail_point!("recover::after_temp_init");
            store_temporary(store, snapshot, &temp, opts).await?;
            clear_copy(&first).await;
            fail::fail_point!("recover::after_temp_checkpoint");
            Some(temp)
        }
    };
    if let Some(temp) = temp {
        unseal_node(
            &first,
            temp.unseal_shares(),
            usize::from(temp.key_threshold),
        )
        .await
        .map_err(|source| RecoverError::TemporaryUnseal {
            pod: first.name().to_owned(),
            source,
        })?;
        wait_for_leader(std::slice::from_ref(&first), opts.timeouts.leader).await?;
        fail::fail_point!("recover::after_temp_leader");
        tracing::info!(pod = first.name(), snapshot = %snapshot.name, "force-restoring the snapshot");
        match feed.restore_into(&first, &temp.root_token, true).await {
            Ok(()) => {}
            // The temporary barrier still answers to the temporary token:
            // nothing was applied, and the next run starts from it again.
            Err(FeedError::Rejected(source)) if token_works(&first, &temp.root_token).await => {
                return Err(RecoverError::Rejected {
                    pod: first.name().to_owned(),
                    source,
                })
            }
            Err(FeedError::Rejected(source) | FeedError::Interrupted(source)) => {
                return Err(RecoverError::Apply {
                    pod: first.name().to_owned(),
                    source,
                })
            }
        }
        fail::fail_point!("recover::after_restore");
        mark_applied(store, snapshot, opts).await?;
        fail::fail_point!("recover::after_applied_checkpoint");
    }
    wait_for_reseal(&first, &unseal_with.root_token, Duration::from_secs(30)).await;
    if unseal_with.seal.is_auto() {
        // An auto-unseal node keeps serving raft with the temporary init's
        // TLS keyring after the forced restore, so followers that join it
        // never unseal (`tls: unrecognized name`). Restarted, it reads the
        // restored data from disk and unseals itself through its seal.
        tracing::info!(
            pod = first.name(),
            "restarting the restored auto-unseal pod"
        );
        restart
            .restart(first.name())
            .await
            .map_err(|source| ConvergeError::Restart {
                pod: first.name().to_owned(),
                source,
            })?;
        fail::fail_point!("recover::after_auto_unseal_restart");
        seal_status_when_up(&first, opts.timeouts.pod_appear)
            .await
            .map_err(|source| RecoverError::ReadStatus {
                pod: first.name().to_owned(),
                source,
            })?;
    }
    tracing::info!(
        generation = unseal_with.generation,
        "unsealing with the stored shares of the snapshot's key generation"
    );
    let report = reconcile(
        cluster,
        &crate::ops::keyring::Keyring::of(&unseal_with),
        &opts.timeouts,
    )
    .await?;
    fail::fail_point!("recover::after_reconcile");
    let leader = nodes
        .iter()
        .find(|n| n.name() == report.leader)
        .unwrap_or(&first);
    let Some(token) = working_token(leader, &stored.root_tokens_for(unseal_with.generation)).await
    else {
        return Err(RecoverError::VerifyRead {
            pod: leader.name().to_owned(),
        });
    };
    let pods = converge(
        cluster,
        restart,
        &unseal_with,
        Some(&token),
        opts.timeouts.pod_appear,
    )
    .await?;
    // Auto-unseal: the pods unsealed themselves, so nothing above used the
    // recovery keys. Ask the restored data whether it takes them.
    let recovery_keys_accepted = if unseal_with.seal.is_auto()
        && !unseal_with.recovery_keys_b64.is_empty()
    {
        match crate::ops::rotate::probe_shares(leader, &token, &unseal_with).await {
            Ok(accepted) => Some(accepted),
            Err(e) => {
                tracing::warn!(pod = leader.name(), error = %e, "could not probe the recovery keys");
                None
            }
        }
    } else {
        None
    };
    let adopted = adopt(
        &stored,
        None,
        &unseal_with,
        Some(&token),
        &report.cluster_id,
    );
    if let Some(next) = &adopted {
        persist(store, Record::Credentials(next), opts.budget)
            .await
            .map_err(|source| RecoverError::StoreCredentials {
                object: store.credentials_object(),
                source,
            })?;
    }
    store
        .delete_checkpoint()
        .await
        .map_err(|source| RecoverError::Checkpoint {
            object: store.checkpoint_object(),
            source,
        })?;
    Ok(RecoverReport {
        snapshot: snapshot.name.clone(),
        generation: unseal_with.generation,
        resumed,
        credentials_updated: adopted.is_some(),
        reconcile: report,
        pods,
        recovery_keys_accepted,
    })
}

async fn statuses<N: VaultNode>(
    nodes: &[N],
    opts: &RestoreOptions,
) -> Result<Vec<SealStatus>, RecoverError> {
    let results = futures::future::join_all(
        nodes
            .iter()
            .map(|n| seal_status_when_up(n, opts.timeouts.pod_appear)),
    )
    .await;
    nodes
        .iter()
        .zip(results)
        .map(|(n, r)| {
            r.map_err(|source| RecoverError::ReadStatus {
                pod: n.name().to_owned(),
                source,
            })
        })
        .collect()
}

/// After a crash with the temporary keys stored: the restore has happened
/// when the node, answering, no longer takes the temporary keys or token.
/// An unreachable node counts as "not yet": marking a temporary barrier as
/// restored would leave a re-run unsealing it with keys that never fit.
async fn restore_happened<N: VaultNode>(node: &N, temp: &Credentials, status: &SealStatus) -> bool {
    if status.sealed {
        return matches!(
            unseal_node(node, temp.unseal_shares(), usize::from(temp.key_threshold)).await,
            Err(UnsealError::Rejected { .. }
                | UnsealError::StillSealed { .. }
                | UnsealError::Node {
                    source: NodeError::Api { .. },
                    ..
                })
        );
    }
    matches!(
        node.call(Request::read("auth/token/lookup-self").with_token(&temp.root_token))
            .await,
        Err(NodeError::Api { .. })
    )
}

async fn mark_applied(
    store: &impl CredentialStore,
    snapshot: &SnapshotRef,
    opts: &RestoreOptions,
) -> Result<(), RecoverError> {
    let applied = Checkpoint::new(
        &opts.holder,
        Phase::RestoreApplied {
            snapshot: snapshot.clone(),
            recover: true,
        },
    );
    save_checkpoint::<RecoverError>(store, &applied, opts.budget).await
}

async fn store_temporary(
    store: &impl CredentialStore,
    snapshot: &SnapshotRef,
    temp: &Credentials,
    opts: &RestoreOptions,
) -> Result<(), RecoverError> {
    let checkpoint = Checkpoint::new(
        &opts.holder,
        Phase::RecoverTempInit {
            snapshot: snapshot.clone(),
            temporary: temp.clone(),
        },
    );
    save_checkpoint::<RecoverError>(store, &checkpoint, opts.budget).await
}

/// The temporary keys from a `sys/init` answer, shaped like `shape` (the
/// snapshot's generation: same seal, share count and threshold).
fn temporary_from(
    answer: crate::ops::secret::SecretAnswer,
    shape: &Credentials,
    pod: &str,
) -> Result<Credentials, RecoverError> {
    crate::ops::seal::credentials_from_init(answer, &shape.seal, Some(shape.key_threshold), 0, "")
        .map_err(|source| RecoverError::TemporaryInit {
            pod: pod.to_owned(),
            source,
        })
}

async fn temporary_init(
    node: &impl VaultNode,
    shape: &Credentials,
) -> Result<Credentials, RecoverError> {
    let body = SecretBytes::json(&crate::ops::seal::init_body(
        &shape.seal,
        shape.key_shares,
        shape.key_threshold,
    ))
    .map_err(|e| RecoverError::TemporaryInit {
        pod: node.name().to_owned(),
        source: NodeError::Malformed(e.to_string()),
    })?;
    tracing::info!(
        pod = node.name(),
        "temporarily initializing to restore into"
    );
    let answer = node
        .init(body)
        .await
        .map_err(|source| RecoverError::TemporaryInit {
            pod: node.name().to_owned(),
            source,
        })?;
    temporary_from(answer, shape, node.name())
}

async fn recover_copy(
    node: &impl VaultNode,
    shape: &Credentials,
) -> Result<Option<Credentials>, RecoverError> {
    let answer =
        node.recover_init_response()
            .await
            .map_err(|source| RecoverError::TemporaryInit {
                pod: node.name().to_owned(),
                source,
            })?;
    answer
        .map(|a| temporary_from(a, shape, node.name()))
        .transpose()
}

async fn clear_copy(node: &impl VaultNode) {
    if let Err(e) = node.clear_init_response().await {
        tracing::warn!(pod = node.name(), error = %e, "could not remove the pod-local copy of the temporary init response");
    }
}
