//! `kubectl vault migrate --to raft`: checks the target, finds where the
//! cluster stands (file storage, raft values applied, raft with data),
//! takes the verified backup, runs phase 1 or phase 2 of `ops::migrate`
//! under the Lease, and prints the values to apply or what was verified.

mod backup;
mod values;

use crate::cli::migrate::MigrateArgs;
use crate::cli::StoreArgs;
use crate::cmd::{holder_identity, Context, Failure};
use crate::ops::checkpoint::Phase;
use crate::ops::cluster::VaultCluster;
use crate::ops::migrate::{self, MigrateError, PrepareOptions, Stage};
use crate::ops::node::{seal_status, VaultNode};
use crate::ops::reconcile::Timeouts;
use crate::ops::store::{CredentialStore, RetryBudget};
use crate::snapshot::location::Location;
use crate::store::kube_secret::SecretStore;
use crate::transport::discover::KubeCluster;
use crate::transport::file_data::{has_file_data, ExecFileData};
use anyhow::anyhow;
use std::time::{Duration, Instant};

fn refuse_or_fail(e: MigrateError) -> Failure {
    if e.is_refusal() {
        Failure::refused(e)
    } else {
        Failure::failed(
            anyhow::Error::new(e).context(
                "migrate did not finish; re-run `kubectl vault migrate --to raft` to resume",
            ),
        )
    }
}

/// An odd voter count of at least 3, or 1 as a one-node raft step.
fn check_replicas(replicas: u8) -> Result<(), Failure> {
    if replicas == 1 || (replicas >= 3 && replicas % 2 == 1) {
        return Ok(());
    }
    Err(Failure::refused(anyhow!(
        "--replicas {replicas}: an even number of raft voters tolerates no more failures than one fewer, and a split leaves no majority; use 3 or 5 (or 1 for a one-node raft step). Nothing was changed"
    )))
}

fn timeouts(timeout: Duration) -> Timeouts {
    Timeouts {
        leader: timeout,
        pod_appear: timeout,
        peers: timeout,
    }
}

pub async fn run(ctx: &Context<'_>, args: MigrateArgs) -> Result<(), Failure> {
    check_replicas(args.replicas)?;
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    if args.rollback {
        return rollback(ctx, &cluster, &store, &args.store).await;
    }
    let checkpoint = migrate::pending(&store).await.map_err(refuse_or_fail)?;
    let phase = checkpoint.as_ref().map(|c| &c.phase);
    let stage = migrate::stage(&cluster).await.map_err(refuse_or_fail)?;
    match (phase, stage) {
        (Some(Phase::AwaitingRaftValues { .. }), Stage::FileStorage) => {
            print_values(ctx, &cluster, args.replicas).await?;
            match args.wait {
                Some(wait) => {
                    wait_for_raft(&cluster, wait).await?;
                    finish(ctx, &cluster, &store, &args).await
                }
                None => Ok(()),
            }
        }
        (Some(Phase::AwaitingRaftValues { .. }), _) => finish(ctx, &cluster, &store, &args).await,
        (None, Stage::Raft { initialized: true }) => finish(ctx, &cluster, &store, &args).await,
        (_, Stage::Raft { initialized: false }) => {
            refuse_empty_raft(&cluster, checkpoint.as_ref().map(|c| &c.phase)).await
        }
        (Some(Phase::MigratePending { .. }) | None, Stage::FileStorage) => {
            prepare(ctx, &cluster, &store, &args).await?;
            match args.wait {
                Some(wait) => {
                    wait_for_raft(&cluster, wait).await?;
                    finish(ctx, &cluster, &store, &args).await
                }
                None => Ok(()),
            }
        }
        (Some(Phase::MigratePending { .. }), Stage::Raft { initialized: true }) => {
            Err(Failure::refused(anyhow!(
                "the raft values were applied before phase 1 finished; re-apply the standalone values and run `kubectl vault migrate --to raft` again (the file data is untouched)"
            )))
        }
        (_, Stage::Unreachable) => {
            let first = cluster
                .pod_infos()
                .await
                .ok()
                .and_then(|p| p.into_iter().next())
                .map(|p| p.name)
                .unwrap_or_default();
            if cluster.refuses_file_storage(&first).await {
                return Err(Failure::refused(anyhow!(
                    "{}; nothing was changed",
                    crate::cmd::next::pin_file_storage_image(&first)
                )));
            }
            Err(Failure::failed(anyhow!(
                "the first pod does not answer; check `kubectl vault status` and re-run `kubectl vault migrate --to raft`"
            )))
        }
        (Some(_), _) => Err(Failure::failed(anyhow!("unexpected checkpoint phase"))),
    }
}

/// Raft pods without data: the values were flipped before a migrate copied
/// anything. Says where the data is and how back.
async fn refuse_empty_raft(cluster: &KubeCluster, phase: Option<&Phase>) -> Result<(), Failure> {
    let nodes = cluster.nodes().await.map_err(Failure::failed)?;
    let first = nodes
        .first()
        .map(|n| n.name().to_owned())
        .unwrap_or_default();
    let file_data = match nodes.first() {
        Some(n) => has_file_data(n).await.unwrap_or(false),
        None => false,
    };
    let backup = match phase {
        Some(Phase::MigratePending { migration } | Phase::AwaitingRaftValues { migration }) => {
            format!(" and in the backup {}", migration.backup.object)
        }
        _ => String::new(),
    };
    if file_data {
        Err(Failure::refused(anyhow!(
            "{first} runs raft storage with no data while file-storage data sits on its volume{backup}: the raft values were applied without a migrate. Do not run `kubectl vault init`: it would start an empty cluster. Way back: re-apply the standalone values (server.standalone.enabled=true, server.ha.enabled=false, one replica), delete pod {first} so it restarts on file storage, then run `kubectl vault migrate --to raft --backup-to LOCATION`"
        )))
    } else {
        Err(Failure::refused(anyhow!(
            "{first} runs raft storage and is not initialized, and no file-storage data is on its volume: there is nothing to migrate{backup}"
        )))
    }
}

async fn prepare(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    store: &SecretStore,
    args: &MigrateArgs,
) -> Result<(), Failure> {
    let checkpoint = store.load_checkpoint().await.map_err(Failure::refused)?;
    let resumed = match checkpoint.map(|c| c.phase) {
        Some(Phase::MigratePending { migration }) => Some(migration),
        _ => None,
    };
    let credentials = store
        .load_credentials()
        .await
        .map_err(Failure::refused)?
        .ok_or_else(|| {
            Failure::refused(MigrateError::NoCredentials {
                object: store.credentials_object(),
            })
        })?;
    let nodes = cluster.nodes().await.map_err(Failure::failed)?;
    let node = nodes
        .first()
        .ok_or_else(|| Failure::failed(anyhow!("no pods")))?;
    let status = seal_status(node).await.map_err(Failure::failed)?;
    if !migrate::migrate_supported(&status.version) {
        return Err(Failure::refused(MigrateError::VersionTooOld {
            pod: node.name().to_owned(),
            version: status.version,
        }));
    }
    let backup = match resumed {
        // Verified when it was taken, and named by the checkpoint since.
        Some(m) => m.backup,
        None => {
            let Some(text) = args.backup_to.as_deref() else {
                return Err(Failure::refused(anyhow!(
                    "no --backup-to: a migrate takes a verified backup of the file data before it changes anything, so that there is a way back; nothing was changed. Run `kubectl vault migrate --to raft --backup-to ./backups/` (a folder, file or s3:// prefix)"
                )));
            };
            let location = Location::parse(text).map_err(Failure::refused)?;
            if !ctx.confirm(&format!(
                "Migrate {}/{} from file storage to raft with {} voters? Pod {} is sealed for the copy and unsealed again; the file data is not changed",
                ctx.namespace,
                cluster.workload_name(),
                args.replicas,
                node.name()
            ))? {
                return Err(Failure::refused(anyhow!(
                    "migrate was not confirmed; nothing was changed"
                )));
            }
            backup::take(
                text,
                &location,
                &cluster.workload_name(),
                node,
                &credentials,
                &status,
            )
            .await?
        }
    };
    let sts = cluster
        .statefulset()
        .map(str::to_owned)
        .unwrap_or_else(|| cluster.workload_name());
    let opts = PrepareOptions {
        holder: holder_identity(),
        budget: RetryBudget::default(),
        replicas: args.replicas,
        cluster_addr: format!("https://{}.{sts}-internal:8201", node.name()),
    };
    let data = ExecFileData {
        nodes: nodes.clone(),
    };
    let guard = ctx.lock(cluster, args.store.lock_timeout).await?;
    let report = guard
        .fenced(migrate::prepare(cluster, store, &data, backup, &opts))
        .await
        .map_err(Failure::failed)?
        .map_err(refuse_or_fail)?;
    let data_path = node.exec().data_dir().unwrap_or("/openbao/data").to_owned();
    ctx.printer
        .value(&report, |r| {
            let done = if r.already_prepared {
                "Phase 1 had finished already".to_owned()
            } else {
                format!(
                    "Phase 1 done: backup {} verified; {} keys copied from file storage into raft beside them on {}, checked against the source; {} unsealed again with key generation {}",
                    r.backup.object, r.keys.copied, r.pod, r.pod, r.generation
                )
            };
            let audit = if r.audit_devices.is_empty() {
                String::new()
            } else {
                format!(
                    "Audit devices: {}. Declare the same `audit` stanzas in the raft config (OpenBao 2.x takes them only from the config), and give their volumes room on every raft pod: a full audit volume fails requests closed.\n",
                    r.audit_devices.join(", ")
                )
            };
            format!(
                "{done}. Checkpoint {}: awaiting_raft_values.\n{audit}\n{}",
                store.checkpoint_object(),
                values::raft_values(&sts, args.replicas, &data_path)
            )
        })
        .map_err(Failure::failed)
}

async fn print_values(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    replicas: u8,
) -> Result<(), Failure> {
    let nodes = cluster.nodes().await.map_err(Failure::failed)?;
    let data_path = nodes
        .first()
        .and_then(|n| n.exec().data_dir().map(str::to_owned))
        .unwrap_or_else(|| "/openbao/data".into());
    let sts = cluster
        .statefulset()
        .map(str::to_owned)
        .unwrap_or_else(|| cluster.workload_name());
    ctx.printer.line(&format!(
        "Phase 1 is done and the first pod still runs file storage.\n\n{}",
        values::raft_values(&sts, replicas, &data_path)
    ));
    Ok(())
}

/// Polls until pod 0 answers on raft storage, within `wait`.
async fn wait_for_raft(cluster: &KubeCluster, wait: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Stage::Raft { .. }) = migrate::stage(cluster).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::failed(anyhow!(
                "the raft values were not applied within {wait:?}; phase 1 stays done. Apply them, then run `kubectl vault migrate --to raft` again"
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn finish(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    store: &SecretStore,
    args: &MigrateArgs,
) -> Result<(), Failure> {
    let guard = ctx.lock(cluster, args.store.lock_timeout).await?;
    let report = guard
        .fenced(migrate::finish(
            cluster,
            store,
            args.replicas,
            &timeouts(args.timeout),
        ))
        .await
        .map_err(Failure::failed)?
        .map_err(refuse_or_fail)?;
    ctx.printer
        .value(&report, |r| {
            format!(
                "Migrated {}/{} to raft: {} voters, leader {}, every pod unsealed with the unchanged key generation {}; the sentinel written before the copy reads back.\n",
                ctx.namespace,
                cluster.workload_name(),
                r.voters,
                r.reconcile.leader,
                r.generation
            )
        })
        .map_err(Failure::failed)
}

/// Phase 2 for the post-upgrade hook: finishes a pending migrate once pod 0
/// runs raft; does nothing when no migrate is pending.
pub async fn finish_pending(
    ctx: &Context<'_>,
    store_args: &StoreArgs,
    timeout: Duration,
) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, store_args.secret_name.as_deref());
    let Ok(Some(checkpoint)) = store.load_checkpoint().await else {
        return Ok(());
    };
    let Phase::AwaitingRaftValues { migration } = &checkpoint.phase else {
        return Ok(());
    };
    wait_for_raft(&cluster, timeout).await?;
    let guard = ctx.lock(&cluster, store_args.lock_timeout).await?;
    let report = guard
        .fenced(migrate::finish(
            &cluster,
            &store,
            migration.replicas,
            &timeouts(timeout),
        ))
        .await
        .map_err(Failure::failed)?
        .map_err(refuse_or_fail)?;
    tracing::info!(voters = report.voters, leader = %report.reconcile.leader, "pending migrate finished");
    Ok(())
}

async fn rollback(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    store: &SecretStore,
    store_args: &StoreArgs,
) -> Result<(), Failure> {
    if !ctx.confirm(
        "Abandon the pending migrate? The raft copy is left unused and the pod goes on with its file storage",
    )? {
        return Err(Failure::refused(anyhow!(
            "rollback was not confirmed; nothing was changed"
        )));
    }
    let guard = ctx.lock(cluster, store_args.lock_timeout).await?;
    let backup = guard
        .fenced(migrate::rollback(cluster, store))
        .await
        .map_err(Failure::failed)?
        .map_err(refuse_or_fail)?;
    ctx.printer.line(&format!(
        "Rolled back: the first pod serves its file storage, unsealed with the stored keys, and the data written before the migrate reads back. The checkpoint is deleted; the backup {} is kept.",
        backup.object
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_odd_voter_counts_are_accepted() {
        for ok in [1, 3, 5, 7] {
            assert!(check_replicas(ok).is_ok(), "{ok}");
        }
        for bad in [0, 2, 4, 6] {
            assert!(check_replicas(bad).is_err(), "{bad}");
        }
    }
}
