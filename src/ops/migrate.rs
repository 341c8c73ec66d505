//! `migrate`: a standalone server on file storage becomes a raft cluster
//! with the same keys and every secret; a one-node raft cluster grows.
//!
//! Owns the order of the steps, the checkpoint they leave and the checks
//! between them. How the file data is backed up and copied inside the pod is
//! the [`FileData`] seam's business; which values to apply, prompts and
//! hints are `cmd`'s.
//!
//! # Expected flow
//! Phase 1, [`prepare`](fn@prepare), on the standalone server with the old values:
//! 1. Preflight: the stored credentials unseal pod 0 and its root token
//!    works; the server is on file storage, at a version whose
//!    `operator migrate` works (OpenBao ≥ 2.5.1, openbao#2466).
//! 2. The caller has streamed and verified a backup ([`BackupRef`]);
//!    the checkpoint `migrate_pending` names it before anything changes.
//! 3. A sentinel goes into the root token's cubbyhole, the pod is sealed
//!    (file storage is then at rest) and `operator migrate` writes raft
//!    storage beside the file data, node id = pod name, `cluster_addr` =
//!    the pod's stable DNS name.
//! 4. The raft copy must hold as many keys as the source.
//! 5. The pod is unsealed again with the same generation, the checkpoint
//!    moves to `awaiting_raft_values`. The caller prints the values.
//!
//! Phase 2, [`finish`](fn@finish), once the StatefulSet runs raft:
//! 1. Pod 0 must be initialized (the copy is there); `init` is never called.
//! 2. [`reconcile`](crate::ops::reconcile::reconcile): unseal pod 0 with the stored generation, wait for it to
//!    lead, join every other pod before unsealing it.
//! 3. Verify: the voters, the sentinel, the unchanged stored generation.
//! 4. Delete the checkpoint.
//!
//! # Guarantees
//! - The file data is never written by a migrate: the copy goes beside it,
//!   so the standalone values bring the old server back at any point
//!   before phase 2 ([`rollback`](fn@rollback)).
//! - The keys never change: nothing here writes credentials.
//! - A partial raft copy is discarded and made again, only while pod 0
//!   still runs file storage.
//!
//! Here the types, errors and shared steps; by noun: `prepare` (phase 1),
//! `finish` (phase 2 and the [`Stage`] it starts from), `rollback` and
//! `sentinel` (the value that proves the copy).

use crate::ops::checkpoint::{BackupRef, Checkpoint, Migration, Phase};
use crate::ops::cluster::ClusterError;
use crate::ops::credentials::Credentials;
use crate::ops::keyring::Keyring;
use crate::ops::node::{NodeError, VaultNode};
use crate::ops::operation::{claim, Claim, Operation, OtherOperation};
use crate::ops::reconcile::{ReconcileError, ReconcileReport};
use crate::ops::store::{CredentialStore, RetryBudget, StoreError};
use crate::ops::unseal::{unseal_with_any, UnsealError};
use std::future::Future;

mod finish;
mod prepare;
mod rollback;
mod sentinel;

pub use finish::{finish, stage, Stage};
pub use prepare::prepare;
pub use rollback::rollback;
pub use sentinel::{sentinel_reads_back, SENTINEL_PATH};

/// What `operator migrate` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyCount {
    /// Keys in the file storage.
    pub source: u64,
    /// Keys `operator migrate` reported copied.
    pub copied: u64,
}

/// Space on a data volume, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Room {
    /// What the file storage takes.
    pub used: u64,
    /// What is free on the volume.
    pub free: u64,
}

/// The in-pod work on the data volume.
pub trait FileData: Send + Sync {
    /// What the file data of `pod` takes and what is free beside it.
    fn room(&self, pod: &str) -> impl Future<Output = Result<Room, NodeError>> + Send;

    /// Writes raft storage beside the file data of `pod` with `operator
    /// migrate` (node id `pod`, `cluster_addr`), after discarding any earlier
    /// raft copy there. The server must be sealed.
    fn copy_to_raft(
        &self,
        pod: &str,
        cluster_addr: &str,
    ) -> impl Future<Output = Result<KeyCount, NodeError>> + Send;
}

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub holder: String,
    pub budget: RetryBudget,
    pub replicas: u8,
    /// `https://<pod>.<sts>-internal:8201`.
    pub cluster_addr: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PrepareReport {
    pub pod: String,
    pub keys: KeyCount,
    pub generation: u32,
    pub backup: BackupRef,
    /// The audit devices the data declares (`sys/audit`), as `path (type:
    /// file_path)`: their volumes must exist on every raft pod, or they
    /// fail closed.
    pub audit_devices: Vec<String>,
    /// Phase 1 had already finished; nothing was done again.
    pub already_prepared: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FinishReport {
    pub reconcile: ReconcileReport,
    pub voters: usize,
    pub generation: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{object} holds no credentials: migrate keeps the keys of a cluster that `kubectl vault init` initialized; import them first with `kubectl vault credentials import`")]
    NoCredentials { object: String },
    #[error(transparent)]
    OtherOperation(#[from] OtherOperation),
    #[error("pod {pod} is not initialized: there is nothing to migrate")]
    NotInitialized { pod: String },
    #[error("{pod} runs OpenBao {version}, whose `operator migrate` loses data (openbao#2466); upgrade to 2.5.1 or later (2.6.x keeps file storage) first")]
    VersionTooOld { pod: String, version: String },
    #[error("the data volume of {pod} has {} KiB free, and the raft copy needs about as much as the file data takes ({} KiB) beside it; grow the volume first. Nothing was changed", room.free, room.used)]
    NoRoom { pod: String, room: Room },
    #[error("the workload has {pods} pods on file storage; a standalone server has one")]
    NotStandalone { pods: usize },
    #[error("the raft copy on {pod} holds {} keys, the file storage {}: the copy is incomplete; the file data is untouched and the pod is unsealed on it again", counts.copied, counts.source)]
    CopyIncomplete { pod: String, counts: KeyCount },
    #[error("pod {pod} runs raft storage but is not initialized: the raft values were applied before the migrate copied the data, which is still on the file storage of {pod}'s volume and in the backup {}. Do not run `init`. Re-apply the standalone values, then run `kubectl vault migrate` again", backup.object)]
    RaftEmpty { pod: String, backup: BackupRef },
    #[error("{pod} still runs file storage: apply the raft values, then run `kubectl vault migrate --to raft` again (or --wait)")]
    AwaitingValues { pod: String },
    #[error("{pod} runs raft storage: re-apply the standalone values (the file data beside the raft copy is untouched, and {} holds a backup of it), then run `kubectl vault migrate --rollback` again", backup.object)]
    RollbackNeedsStandalone { pod: String, backup: BackupRef },
    #[error("nothing to finish: no migrate is pending")]
    NothingPending,
    #[error("phase 1 did not finish (checkpoint {phase}); run `kubectl vault migrate --to raft --backup-to ...` on the standalone server first")]
    NotPrepared { phase: &'static str },
    #[error("{pod} joined the leader but did not come up within the deadline: raft traffic between the pods does not get through. Pods must reach each other on 8200 (API; the retry_join challenge goes there) and 8201 (raft), in both directions: check NetworkPolicies and firewalls, then run `kubectl vault migrate --to raft` again")]
    PeerUnreachable { pod: String },
    #[error("{found} raft voters, {wanted} wanted: {}; pods must reach each other on 8200 and 8201 in both directions", missing.join(", "))]
    Voters {
        found: usize,
        wanted: usize,
        missing: Vec<String>,
    },
    #[error("the sentinel written before the copy does not read back from {pod}: the data is not the migrated data; the backup {} holds it", backup.object)]
    SentinelLost { pod: String, backup: BackupRef },
    #[error("the stored credentials changed during the migrate (generation {before} → {after}); check `kubectl vault credentials show`")]
    GenerationChanged { before: u32, after: u32 },
    #[error("could not {action} on pod {pod}")]
    Node {
        action: &'static str,
        pod: String,
        #[source]
        source: NodeError,
    },
    #[error(transparent)]
    Unseal(#[from] UnsealError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MigrateError {
    /// Refusals: nothing changed, and retrying as is cannot help (exit 1).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            MigrateError::NoCredentials { .. }
                | MigrateError::OtherOperation(_)
                | MigrateError::NotInitialized { .. }
                | MigrateError::VersionTooOld { .. }
                | MigrateError::NotStandalone { .. }
                | MigrateError::NoRoom { .. }
                | MigrateError::RaftEmpty { .. }
                | MigrateError::AwaitingValues { .. }
                | MigrateError::RollbackNeedsStandalone { .. }
                | MigrateError::NothingPending
                | MigrateError::NotPrepared { .. }
                | MigrateError::GenerationChanged { .. }
                | MigrateError::SentinelLost { .. }
                | MigrateError::PeerUnreachable { .. }
        )
    }
}

/// Whether `version` (`2.6.2`, `v2.5.1-rc1`) has a working file → raft copy.
pub fn migrate_supported(version: &str) -> bool {
    let nums: Vec<u32> = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    let v = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
        nums.get(2).copied().unwrap_or(0),
    );
    v >= (2, 5, 1) || v.0 == 1
}

fn node_err(action: &'static str, node: &impl VaultNode) -> impl FnOnce(NodeError) -> MigrateError {
    let pod = node.name().to_owned();
    move |source| MigrateError::Node {
        action,
        pod,
        source,
    }
}

async fn stored(store: &impl CredentialStore) -> Result<Credentials, MigrateError> {
    store
        .load_credentials()
        .await?
        .ok_or_else(|| MigrateError::NoCredentials {
            object: store.credentials_object(),
        })
}

/// The checkpoint if it is a migrate's; another operation's is a refusal.
pub async fn pending(store: &impl CredentialStore) -> Result<Option<Checkpoint>, MigrateError> {
    let checkpoint = store.load_checkpoint().await?;
    match claim(checkpoint.as_ref(), Operation::Migrate) {
        Claim::Free => Ok(None),
        Claim::Resume(c) => Ok(Some(c.clone())),
        Claim::Busy(found) => Err(OtherOperation::new(store.checkpoint_object(), found).into()),
    }
}

fn migration_of(checkpoint: Option<&Checkpoint>) -> Option<&Migration> {
    match checkpoint.map(|c| &c.phase) {
        Some(Phase::MigratePending { migration } | Phase::AwaitingRaftValues { migration }) => {
            Some(migration)
        }
        _ => None,
    }
}

async fn unseal(node: &impl VaultNode, credentials: &Credentials) -> Result<(), MigrateError> {
    let keys = Keyring::of(credentials);
    // Only the current generation: a migrate never moves to another one.
    let sets = keys.key_sets();
    unseal_with_any(node, &sets[..sets.len().min(1)]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versions_with_a_working_copy_are_accepted() {
        assert!(!migrate_supported("2.5.0"));
        assert!(migrate_supported("2.5.1"));
        assert!(migrate_supported("2.6.2"));
        assert!(migrate_supported("v2.7.2"));
        assert!(!migrate_supported("2.4.9"));
        assert!(migrate_supported("1.20.4"), "Vault 1.x migrates");
    }
}
