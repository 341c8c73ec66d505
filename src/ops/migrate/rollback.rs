//! `--rollback` before phase 2 finished: the standalone server back on its
//! untouched file data.

use super::sentinel::sentinel_reads_back;
use super::{migration_of, node_err, pending, stored, unseal, MigrateError};
use crate::ops::checkpoint::BackupRef;
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::node::{seal_status_when_up, StorageKind, VaultNode};
use crate::ops::store::CredentialStore;
use std::time::Duration;

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
