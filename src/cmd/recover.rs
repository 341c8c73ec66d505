//! `kubectl vault recover`: checks the condition (no pod initialized, first;
//! stored credentials; a verified snapshot of this cluster), asks, takes the
//! lock and runs the recover state machine. An interrupted recover resumes
//! with the snapshot its checkpoint names.

use crate::cli::recover::RecoverArgs;
use crate::cmd::snapshot::{require_raft, restore_inputs, stored, PodRestart};
use crate::cmd::{Context, Failure};
use crate::ops::recover::{
    ensure_nothing_initialized, pending_snapshot, snapshot_replaceable, RecoverError,
};
use crate::ops::store::CredentialStore;
use crate::snapshot::location::Location;
use crate::snapshot::SnapshotError;
use anyhow::anyhow;

pub async fn run(ctx: &Context<'_>, args: RecoverArgs) -> Result<(), Failure> {
    let location = Location::parse(&args.from).map_err(Failure::refused)?;
    let cluster = ctx.cluster().await?;
    require_raft(&cluster, "recover").await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let credentials = stored(&store).await?;
    let checkpoint = store.load_checkpoint().await.map_err(Failure::refused)?;
    let probe_opts = crate::ops::restore::RestoreOptions {
        holder: crate::cmd::holder_identity(),
        budget: crate::ops::store::RetryBudget::default(),
        timeouts: crate::cmd::snapshot::timeouts(args.timeout),
    };
    if pending_snapshot(checkpoint.as_ref()).is_none() {
        // A healthy cluster gets this answer whatever --from holds.
        ensure_nothing_initialized(&cluster, &probe_opts)
            .await
            .map_err(|e| match e {
                e @ RecoverError::AlreadyInitialized { .. } => Failure::refused(e),
                e => Failure::failed(e),
            })?;
    }
    let pending = match pending_snapshot(checkpoint.as_ref()) {
        Some(pending) => match location.verify(&pending.name).await {
            Ok((manifest, _)) => Some((pending.name.clone(), manifest)),
            // Not applied yet: the recover may go on with another snapshot.
            Err(e) if snapshot_replaceable(checkpoint.as_ref()) => {
                tracing::warn!(error = %e, snapshot = %pending.name, "the interrupted recover's snapshot is not usable here; choosing another");
                None
            }
            Err(e) => {
                return Err(Failure::refused(anyhow::Error::new(e).context(format!(
                    "an interrupted recover in {} has applied {}; --from must reach it",
                    store.checkpoint_object(),
                    pending.name
                ))))
            }
        },
        None => None,
    };
    let (name, manifest) = match pending {
        Some(found) => found,
        None => {
            let cluster_id =
                (!args.allow_foreign_cluster).then_some(credentials.cluster_id.as_str());
            match location.newest_verified(cluster_id).await {
                Ok(found) => found,
                Err(
                    e @ (SnapshotError::NoneVerified { .. }
                    | SnapshotError::NoneOfThisCluster { .. }),
                ) => {
                    let stopped = if checkpoint.is_none() {
                        "recover stopped and initialized nothing"
                    } else {
                        "the interrupted recover stays where it was"
                    };
                    return Err(Failure::refused(anyhow!(
                        "{e}: {stopped}; the stored keys in {} are untouched. \
                         Point --from at the folder or bucket that holds this cluster's snapshots (`kubectl vault snapshot list --from ...` shows what a location holds)",
                        store.credentials_object()
                    )));
                }
                Err(e) => return Err(Failure::failed(e)),
            }
        }
    };
    if !args.allow_foreign_cluster {
        let entry_cluster = &manifest.cluster_id;
        if !credentials.cluster_id.is_empty()
            && !entry_cluster.is_empty()
            && entry_cluster != &credentials.cluster_id
        {
            return Err(Failure::refused(anyhow!(
                "{} was taken from cluster {entry_cluster}, but {} holds the keys of cluster {}; recover stopped and initialized nothing. Pass --allow-foreign-cluster to use it anyway",
                location.object(&name),
                store.credentials_object(),
                credentials.cluster_id
            )));
        }
    }
    if !ctx.confirm(&format!(
        "Recover {}/{} from {} (taken {}, key generation {})? Pod 0 is initialized temporarily and overwritten by the snapshot",
        ctx.namespace,
        cluster.workload_name(),
        location.object(&name),
        manifest.created_at,
        manifest.generation
    ))? {
        return Err(Failure::refused(anyhow!(
            "recover was not confirmed; nothing was changed"
        )));
    }
    let (snapshot, feed, opts) = restore_inputs(
        &args.from,
        &location,
        &name,
        &manifest,
        args.timeout,
        args.stream_timeout,
    );
    let restart = PodRestart::new(ctx);
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let result = guard
        .fenced(crate::ops::recover::run(
            &cluster, &store, &feed, &restart, &snapshot, &opts,
        ))
        .await
        .map_err(Failure::failed)?;
    let report = result.map_err(|e| match e {
        e @ (RecoverError::NoCredentials { .. }
        | RecoverError::AlreadyInitialized { .. }
        | RecoverError::Generation(_)
        | RecoverError::OtherOperation { .. }
        | RecoverError::OtherSnapshot { .. }
        | RecoverError::TemporaryKeysLost { .. }
        | RecoverError::Rejected { .. }) => Failure::refused(e),
        e => Failure::failed(anyhow::Error::new(e).context(
            "recover did not finish; re-run `kubectl vault recover` with the same --from to resume",
        )),
    })?;
    let which = if report.generation == credentials.generation {
        format!("the current stored key generation {}", report.generation)
    } else {
        format!(
            "retired key generation {} from the credentials history",
            report.generation
        )
    };
    if report.recovery_keys_accepted == Some(false) {
        tracing::warn!(
            "the restored data does not accept the recovery keys stored for generation {}: root token generation and `rotate --recovery` need the recovery keys of the cluster the snapshot was taken from (`kubectl vault credentials import` them)",
            report.generation
        );
    }
    ctx.printer
        .value(&report, |r| {
            let stored_note = if r.credentials_updated {
                format!(
                    "{} now holds key generation {} and the root token of the restored data as current; the previous ones are kept in its history",
                    store.credentials_object(),
                    r.generation
                )
            } else {
                format!("The stored credentials in {} were not changed", store.credentials_object())
            };
            let mut text = format!(
                "Recovered {}/{} from {}: {} pods unsealed with {which}, leader {}. {stored_note}.\n",
                ctx.namespace,
                cluster.workload_name(),
                location.object(&r.snapshot),
                r.reconcile.pods.len(),
                r.reconcile.leader,
            );
            text.push_str(&crate::cmd::snapshot::remedied(&r.pods));
            text
        })
        .map_err(Failure::failed)
}
