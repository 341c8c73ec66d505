//! `snapshot save`: resolves the arguments, finds the active pod, asks
//! before an existing object is replaced, and runs `ops::snapshot_save`
//! (stream, commit, manifest) with the pod as the source and the target as
//! the store; then the optional restore-test, retention (this cluster's
//! snapshots only) and the report.

use crate::cli::snapshot::SaveArgs;
use crate::cmd::{Context, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::node::VaultNode;
use crate::ops::reconcile::wait_for_leader;
use crate::ops::snapshot_save::{self, OnExisting, SaveError, Saved, SystemClock};
use crate::ops::store::CredentialStore;
use crate::snapshot::location::Location;
use crate::snapshot::manifest::Manifest;
use crate::snapshot::retention::Policy;
use anyhow::anyhow;
use std::time::Duration;

use super::source::ActivePod;
use super::{parse, require_raft, restore_test, stored};

#[derive(Debug, serde::Serialize)]
struct SaveReport {
    location: String,
    object: String,
    manifest: Manifest,
    pruned: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_test: Option<restore_test::Outcome>,
}

/// Pushes a save's outcome to a Pushgateway (POST: the last success's
/// series survive a failed attempt). A push that fails is a warning: the
/// snapshot itself is what matters.
pub(super) async fn push_outcome(ctx: &Context<'_>, url: &str, to: &str, ok: bool) {
    let registry = crate::metrics::Registry::default();
    let now = jiff::Timestamp::now().as_second() as f64;
    registry.set(
        "kubectl_vault_snapshot_last_attempt_timestamp_seconds",
        "When the last snapshot save ended (Unix time).",
        &[],
        now,
    );
    registry.set(
        "kubectl_vault_snapshot_last_attempt_success",
        "1 when the last snapshot save succeeded.",
        &[],
        if ok { 1.0 } else { 0.0 },
    );
    if ok {
        registry.set(
            "kubectl_vault_snapshot_last_success_timestamp_seconds",
            "When the last successful snapshot save ended (Unix time).",
            &[],
            now,
        );
        let newest = match parse(to) {
            Ok(l) if l.is_collection() => l.list().await.ok().and_then(|e| e.into_iter().next()),
            _ => None,
        };
        if let Some(entry) = newest {
            registry.set(
                "kubectl_vault_snapshot_last_size_bytes",
                "The size of the last saved snapshot.",
                &[],
                entry.size as f64,
            );
        }
    }
    if let Err(e) =
        crate::metrics::push(url, "kubectl_vault_snapshot", &ctx.namespace, &registry).await
    {
        tracing::warn!("{e:#}");
    }
}

pub(super) async fn save(ctx: &Context<'_>, args: SaveArgs) -> Result<(), Failure> {
    let location = parse(&args.to)?;
    let policy = Policy {
        keep: args.keep,
        max_age: args.max_age,
    };
    if !policy.is_empty() && !location.is_collection() {
        return Err(Failure::refused(anyhow!(
            "--keep and --max-age need a folder or bucket target (ending in /), not the single file {location}"
        )));
    }
    if args.keep == Some(0) {
        return Err(Failure::refused(anyhow!("--keep must be at least 1")));
    }
    let cluster = ctx.cluster().await?;
    require_raft(&cluster, "snapshot save").await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let credentials = stored(&store).await?;
    // In the middle of another operation the data's key generation is not
    // the stored one (a verified rekey, a restore): the manifest would name
    // shares that do not open the snapshot.
    if let Ok(Some(c)) = store.load_checkpoint().await {
        return Err(Failure::refused(
            crate::ops::operation::OtherOperation::new(store.checkpoint_object(), &c),
        ));
    }
    let nodes = cluster.nodes().await.map_err(Failure::refused)?;
    let (leader_pod, _) = wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .map_err(Failure::refused)?;
    let leader = nodes
        .into_iter()
        .find(|n| n.name() == leader_pod)
        .ok_or_else(|| Failure::failed(anyhow!("pod {leader_pod} vanished")))?;

    let clock = SystemClock;
    let mut source = ActivePod::new(leader, credentials.root_token.clone());
    let plan = snapshot_save::plan(&mut source, &location, &cluster.workload_name(), &clock)
        .await
        .map_err(failure)?;
    let on_existing = match &plan.existing {
        Some(object) if !ctx.confirm(&format!("replace the existing {object}?"))? => {
            OnExisting::Keep
        }
        _ => OnExisting::Replace,
    };
    let saved = snapshot_save::save(
        &mut source,
        &location,
        plan,
        on_existing,
        credentials.generation,
        &clock,
    )
    .await
    .map_err(failure)?;
    let test = args
        .restore_test
        .restore_test
        .then_some(restore_test::Settings {
            sentinel: args.restore_test.sentinel.as_deref(),
            timeout: args.restore_test.restore_test_timeout,
            secret_name: args.store.secret_name.as_deref(),
            pushgateway: args.pushgateway.as_deref(),
        });
    test_and_report(ctx, &location, saved, policy, test).await
}

/// A save that stopped, with its exit code: a refusal (exit 1) for what
/// the user can fix (the target, the answer, a stream that is not a whole
/// snapshot); a failure (exit 2) when the store refused or lost the upload
/// or the pod failed.
fn failure(e: SaveError) -> Failure {
    if e.is_refusal() {
        Failure::refused(e)
    } else {
        Failure::failed(e)
    }
}

/// Runs the restore-test of the saved snapshot (before retention, so that
/// retention sees the recorded result), applies retention and prints the
/// report.
async fn test_and_report(
    ctx: &Context<'_>,
    location: &Location,
    mut saved: Saved,
    policy: Policy,
    test: Option<restore_test::Settings<'_>>,
) -> Result<(), Failure> {
    let object = saved.object.clone();
    let tested = match test {
        Some(settings) => Some(
            restore_test::test(ctx, location, &saved.manifest.snapshot, &settings)
                .await
                .map_err(|f| Failure {
                    exit: f.exit,
                    error: f.error.context(format!("{object} was saved")),
                })?,
        ),
        None => None,
    };
    if let Some(t) = &tested {
        saved.manifest.restore_test = Some(t.record.clone());
    }
    saved
        .apply_retention(location, policy, &SystemClock)
        .await
        .map_err(failure)?;
    let tested_ok = tested.as_ref().map(restore_test::Outcome::passed);
    // A test refused before it started (no room) is a precondition to fix.
    let tested_refused = tested.as_ref().is_some_and(|t| t.refused);
    let report = SaveReport {
        location: location.to_string(),
        object: saved.object,
        manifest: saved.manifest,
        pruned: saved.pruned,
        restore_test: tested,
    };
    ctx.printer
        .value(&report, |r| {
            let mut text = format!(
                "Saved {} ({} bytes, sha256 {}) from {}, key generation {}.\n",
                r.object,
                r.manifest.size,
                r.manifest.sha256,
                r.manifest.source_pod,
                r.manifest.generation
            );
            if !r.pruned.is_empty() {
                text.push_str(&format!("Pruned {}.\n", r.pruned.join(", ")));
            }
            if let Some(t) = &r.restore_test {
                text.push_str(&t.text());
            }
            text
        })
        .map_err(Failure::failed)?;
    match tested_ok {
        Some(false) => {
            let error = anyhow!(
                "{object} was saved, but its restore-test did not pass (see above); `kubectl vault snapshot verify --from {} --snapshot {} --restore-test` repeats it",
                location,
                object.rsplit('/').next().unwrap_or_default()
            );
            Err(if tested_refused {
                Failure::refused(error)
            } else {
                Failure::failed(error)
            })
        }
        _ => Ok(()),
    }
}
