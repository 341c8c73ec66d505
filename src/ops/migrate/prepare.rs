//! Phase 1 on the standalone server: the backup recorded, the sentinel
//! written, the server sealed, `operator migrate` copying the file data
//! into raft storage beside it, the copy counted, the server unsealed
//! again on file storage.

use super::sentinel::{new_sentinel, write_sentinel};
use super::{
    migrate_supported, migration_of, node_err, pending, stored, unseal, FileData, KeyCount,
    MigrateError, PrepareOptions, PrepareReport,
};
use crate::ops::checkpoint::{BackupRef, Checkpoint, Migration, Phase};
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status_when_up, NodeError, Request, StorageKind, VaultNode};
use crate::ops::secret::SecretBytes;
use crate::ops::store::{persist, CredentialStore, Record};
use std::time::Duration;

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
