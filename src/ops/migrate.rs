//! `migrate`: a standalone server on file storage becomes a raft cluster
//! with the same keys and every secret; a one-node raft cluster grows.
//!
//! Owns the order of the steps, the checkpoint they leave and the checks
//! between them. How the file data is backed up and copied inside the pod is
//! the [`FileData`] seam's business; which values to apply, prompts and
//! hints are `cmd`'s.
//!
//! # Expected flow
//! Phase 1, [`prepare`], on the standalone server with the old values:
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
//! Phase 2, [`finish`], once the StatefulSet runs raft:
//! 1. Pod 0 must be initialized (the copy is there); `init` is never called.
//! 2. [`reconcile`]: unseal pod 0 with the stored generation, wait for it to
//!    lead, join every other pod before unsealing it.
//! 3. Verify: the voters, the sentinel, the unchanged stored generation.
//! 4. Delete the checkpoint.
//!
//! # Guarantees
//! - The file data is never written by a migrate: the copy goes beside it,
//!   so the standalone values bring the old server back at any point
//!   before phase 2 ([`rollback`]).
//! - The keys never change: nothing here writes credentials.
//! - A partial raft copy is discarded and made again, only while pod 0
//!   still runs file storage.

use crate::ops::checkpoint::{BackupRef, Checkpoint, Migration, Phase};
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::credentials::Credentials;
use crate::ops::keyring::Keyring;
use crate::ops::node::{
    raft_peers, seal_status_when_up, NodeError, Request, StorageKind, VaultNode,
};
use crate::ops::operation::{claim, Claim, Operation, OtherOperation};
use crate::ops::reconcile::{reconcile, ReconcileError, ReconcileReport, Timeouts};
use crate::ops::secret::SecretBytes;
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};
use crate::ops::unseal::{unseal_with_any, UnsealError};
use std::future::Future;
use std::time::Duration;

/// Where the sentinel lives: the root token's cubbyhole, which no other
/// token can read and which migrates with the rest of the storage.
pub const SENTINEL_PATH: &str = "cubbyhole/kubectl-vault-migrate";

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

/// A fresh sentinel value: random, not a secret.
fn new_sentinel() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn write_sentinel(
    node: &impl VaultNode,
    credentials: &Credentials,
    sentinel: &str,
) -> Result<(), MigrateError> {
    let body = SecretBytes::json(&serde_json::json!({ "sentinel": sentinel }))
        .map_err(|e| NodeError::Malformed(e.to_string()))
        .map_err(node_err("write the sentinel", node))?;
    node.call(Request::write(SENTINEL_PATH, body).with_token(&credentials.root_token))
        .await
        .map_err(node_err(
            "write the sentinel with the stored root token",
            node,
        ))?;
    Ok(())
}

/// Reads the sentinel back; `Ok(false)` when it is absent or different.
pub async fn sentinel_reads_back(
    node: &impl VaultNode,
    credentials: &Credentials,
    sentinel: &str,
) -> Result<bool, NodeError> {
    match node
        .call(Request::read(SENTINEL_PATH).with_token(&credentials.root_token))
        .await
    {
        Ok(v) => Ok(v.get("sentinel").and_then(|s| s.as_str()) == Some(sentinel)),
        Err(NodeError::Api { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `sys/audit` as `path (type: file_path)` lines.
async fn audit_devices(
    node: &impl VaultNode,
    credentials: &Credentials,
) -> Result<Vec<String>, MigrateError> {
    #[derive(serde::Deserialize)]
    struct Device {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        options: std::collections::BTreeMap<String, String>,
    }
    let value = node
        .call(Request::read("sys/audit").with_token(&credentials.root_token))
        .await
        .map_err(node_err("list the audit devices", node))?;
    let devices: std::collections::BTreeMap<String, Device> =
        serde_json::from_value(value).unwrap_or_default();
    Ok(devices
        .into_iter()
        .map(|(path, d)| match d.options.get("file_path") {
            Some(file) => format!("{path} ({}: {file})", d.kind),
            None => format!("{path} ({})", d.kind),
        })
        .collect())
}

async fn seal(node: &impl VaultNode, credentials: &Credentials) -> Result<(), MigrateError> {
    let body = SecretBytes::json(&serde_json::json!({}))
        .map_err(|e| NodeError::Malformed(e.to_string()))
        .map_err(node_err("seal", node))?;
    node.call(Request::write("sys/seal", body).with_token(&credentials.root_token))
        .await
        .map_err(node_err("seal the server with the stored root token", node))?;
    Ok(())
}

async fn unseal(node: &impl VaultNode, credentials: &Credentials) -> Result<(), MigrateError> {
    let keys = Keyring::of(credentials);
    // Only the current generation: a migrate never moves to another one.
    let sets = keys.key_sets();
    unseal_with_any(node, &sets[..sets.len().min(1)]).await?;
    Ok(())
}

/// Phase 1: copy the file data of pod 0 into raft storage beside it.
///
/// # Expected flow
/// See the module header. `backup` must be verified by the caller: it is
/// recorded in the checkpoint before the pod is sealed.
///
/// # Guarantees
/// On `Ok`, the checkpoint is `awaiting_raft_values` and the pod is unsealed
/// on file storage. On a refusal nothing changed. On any other error the
/// checkpoint is `migrate_pending` and a re-run resumes: it copies again.
pub async fn prepare<C, S, F>(
    cluster: &C,
    store: &S,
    data: &F,
    backup: BackupRef,
    opts: &PrepareOptions,
) -> Result<PrepareReport, MigrateError>
where
    C: VaultCluster,
    S: CredentialStore,
    F: FileData,
{
    let credentials = stored(store).await?;
    let checkpoint = pending(store).await?;
    let nodes = cluster.nodes().await?;
    let Some(node) = nodes.first() else {
        return Err(ClusterError::List("no pods".into()).into());
    };
    let status = seal_status_when_up(node, Duration::from_secs(60))
        .await
        .map_err(node_err("read the seal status", node))?;
    if let Some(Phase::AwaitingRaftValues { migration }) = checkpoint.as_ref().map(|c| &c.phase) {
        if status.storage() == StorageKind::Raft {
            return Err(MigrateError::NotPrepared {
                phase: "awaiting_raft_values",
            });
        }
        return Ok(PrepareReport {
            pod: migration.pod.clone(),
            keys: KeyCount {
                source: migration.keys.unwrap_or(0),
                copied: migration.keys.unwrap_or(0),
            },
            generation: migration.generation,
            backup: migration.backup.clone(),
            audit_devices: Vec::new(),
            already_prepared: true,
        });
    }
    let resumed = migration_of(checkpoint.as_ref()).cloned();
    if status.storage() == StorageKind::Raft && !status.initialized {
        return Err(MigrateError::RaftEmpty {
            pod: node.name().to_owned(),
            backup: resumed.map_or(backup, |m| m.backup),
        });
    }
    if !status.initialized {
        return Err(MigrateError::NotInitialized {
            pod: node.name().to_owned(),
        });
    }
    if !migrate_supported(&status.version) {
        return Err(MigrateError::VersionTooOld {
            pod: node.name().to_owned(),
            version: status.version,
        });
    }
    if nodes.len() > 1 {
        return Err(MigrateError::NotStandalone { pods: nodes.len() });
    }
    // Preflight: the stored shares open the data and the token works.
    unseal(node, &credentials).await?;
    let audit_devices = audit_devices(node, &credentials).await?;
    // A copy after a crash replaces the earlier one: only a fresh run checks.
    if resumed.is_none() {
        #[allow(unused_mut)]
        let mut room = data
            .room(node.name())
            .await
            .map_err(node_err("measure the data volume", node))?;
        // Tests: a volume with no room left beside the file data.
        #[cfg(feature = "failpoints")]
        if fail::eval("migrate::volume_full", |_| ()).is_some() {
            room.free = 0;
        }
        if room.free < room.used {
            return Err(MigrateError::NoRoom {
                pod: node.name().to_owned(),
                room,
            });
        }
    }
    let migration = match resumed {
        Some(m) => m,
        None => Migration {
            backup,
            pod: node.name().to_owned(),
            replicas: opts.replicas,
            generation: credentials.generation,
            keys: None,
            sentinel: new_sentinel(),
        },
    };
    write_sentinel(node, &credentials, &migration.sentinel).await?;
    let checkpoint = Checkpoint::new(
        &opts.holder,
        Phase::MigratePending {
            migration: migration.clone(),
        },
    );
    persist(store, Record::Checkpoint(&checkpoint), opts.budget).await?;
    fail::fail_point!("migrate::before_seal");
    seal(node, &credentials).await?;
    fail::fail_point!("migrate::before_copy");
    let copied = data.copy_to_raft(node.name(), &opts.cluster_addr).await;
    fail::fail_point!("migrate::after_copy");
    // Whatever the copy did, the file data is untouched: serve it again.
    unseal(node, &credentials).await?;
    let counts = copied.map_err(node_err("copy the file storage into raft", node))?;
    if counts.copied != counts.source || counts.source == 0 {
        return Err(MigrateError::CopyIncomplete {
            pod: node.name().to_owned(),
            counts,
        });
    }
    let migration = Migration {
        keys: Some(counts.copied),
        ..migration
    };
    let checkpoint = Checkpoint::new(
        &opts.holder,
        Phase::AwaitingRaftValues {
            migration: migration.clone(),
        },
    );
    persist(store, Record::Checkpoint(&checkpoint), opts.budget).await?;
    fail::fail_point!("migrate::awaiting_raft_values");
    Ok(PrepareReport {
        pod: migration.pod,
        keys: counts,
        generation: migration.generation,
        backup: migration.backup,
        audit_devices,
        already_prepared: false,
    })
}

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

/// `--rollback` before phase 2 finished: pod 0 must serve file storage again
/// (the standalone values re-applied); it is unsealed with the stored keys,
/// the sentinel must read back, and the checkpoint is deleted.
pub async fn rollback<C, S>(cluster: &C, store: &S) -> Result<BackupRef, MigrateError>
where
    C: VaultCluster,
    S: CredentialStore,
{
    let credentials = stored(store).await?;
    let checkpoint = pending(store).await?;
    let Some(migration) = migration_of(checkpoint.as_ref()).cloned() else {
        return Err(MigrateError::NothingPending);
    };
    let nodes = cluster.nodes().await?;
    let Some(node) = nodes.first() else {
        return Err(ClusterError::List("no pods".into()).into());
    };
    let status = seal_status_when_up(node, Duration::from_secs(60))
        .await
        .map_err(node_err("read the seal status", node))?;
    if status.storage() == StorageKind::Raft {
        return Err(MigrateError::RollbackNeedsStandalone {
            pod: node.name().to_owned(),
            backup: migration.backup,
        });
    }
    unseal(node, &credentials).await?;
    let back = sentinel_reads_back(node, &credentials, &migration.sentinel)
        .await
        .map_err(node_err("read the sentinel", node))?;
    if !back {
        return Err(MigrateError::SentinelLost {
            pod: node.name().to_owned(),
            backup: migration.backup,
        });
    }
    store.delete_checkpoint().await?;
    Ok(migration.backup)
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
