//! `kubectl vault recover`: checks the condition (no pod initialized, stored
//! credentials, a verified snapshot), asks, takes the lock and runs the
//! recover state machine. An interrupted recover resumes with the snapshot
//! its checkpoint names.

use crate::cli::recover::RecoverArgs;
use crate::cmd::snapshot::{require_raft, restore_inputs, stored};
use crate::cmd::{Context, Failure};
use crate::ops::recover::{pending_snapshot, RecoverError};
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
    let (name, manifest) = match pending_snapshot(checkpoint.as_ref()) {
        Some(pending) => {
            let (manifest, _) = location.verify(&pending.name).await.map_err(|e| {
                Failure::refused(anyhow::Error::new(e).context(format!(
                    "an interrupted recover in {} works from {}; --from must reach it",
                    store.checkpoint_object(),
                    pending.name
                )))
            })?;
            (pending.name.clone(), manifest)
        }
        None => match location.newest_verified().await {
            Ok(found) => found,
            Err(e @ SnapshotError::NoneVerified { .. }) => {
                return Err(Failure::refused(anyhow!(
                    "{e}: recover stopped and initialized nothing; the stored keys in {} are untouched. \
                     Options: point --from at the folder or bucket that holds the snapshots (`kubectl vault snapshot list --from ...`); \
                     or, if no snapshot exists anywhere, the data is gone: only then delete {} and run `kubectl vault init` for an empty cluster",
                    store.credentials_object(),
                    store.credentials_object()
                )))
            }
            Err(e) => return Err(Failure::failed(e)),
        },
    };
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
    let (snapshot, feed, opts) =
        restore_inputs(&args.from, &location, &name, &manifest, args.timeout);
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let result = crate::ops::recover::run(&cluster, &store, &feed, &snapshot, &opts).await;
    guard.release().await;
    let report = result.map_err(|e| match e {
        e @ (RecoverError::NoCredentials { .. }
        | RecoverError::AlreadyInitialized { .. }
        | RecoverError::Generation(_)
        | RecoverError::OtherOperation { .. }
        | RecoverError::OtherSnapshot { .. }
        | RecoverError::TemporaryKeysLost { .. }) => Failure::refused(e),
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
    ctx.printer
        .value(&report, |r| {
            format!(
                "Recovered {}/{} from {}: {} pods unsealed with {which}, leader {}. The stored credentials in {} were not changed.\n",
                ctx.namespace,
                cluster.workload_name(),
                location.object(&r.snapshot),
                r.reconcile.pods.len(),
                r.reconcile.leader,
                store.credentials_object()
            )
        })
        .map_err(Failure::failed)
}
