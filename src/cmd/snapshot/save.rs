//! `snapshot save`: streams `GET sys/storage/raft/snapshot` from the active
//! pod through the direct transport (with exec: `operator raft snapshot
//! save /dev/stdout`) into the target while hashing it, writes the
//! manifest, then applies retention (to this cluster's snapshots only).

use crate::cli::snapshot::SaveArgs;
use crate::cmd::{Context, Failure};
use crate::ops::checkpoint::now_rfc3339;
use crate::ops::cluster::VaultCluster;
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, Request, VaultNode};
use crate::ops::reconcile::wait_for_leader;
use crate::ops::secret::Secret;
use crate::ops::store::CredentialStore;
use crate::output::log::Transfer;
use crate::snapshot::location::{Existing, Location};
use crate::snapshot::manifest::{Manifest, MANIFEST_SCHEMA};
use crate::snapshot::retention::{self, Candidate, Policy};
use crate::snapshot::stream::{pump, Digested};
use crate::snapshot::SnapshotError;
use crate::transport::exec::{parse_cli_error, StreamStdin};
use crate::transport::pod::PodNode;
use anyhow::anyhow;
use std::time::Duration;

use super::{parse, require_raft, restore_test, stored, token_line};

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
    let status = seal_status(&leader).await.map_err(Failure::failed)?;
    let raft_index = leader
        .call(Request::read("sys/leader"))
        .await
        .ok()
        .and_then(|v| {
            v.get("raft_committed_index")
                .and_then(serde_json::Value::as_u64)
        });

    let name = location.name_for(&cluster.workload_name(), jiff::Timestamp::now());
    let object = location.object(&name);
    if let Existing::Yes { object } = location
        .preflight_write(&name)
        .await
        .map_err(Failure::refused)?
    {
        if !ctx.confirm(&format!("replace the existing {object}?"))? {
            return Err(Failure::refused(anyhow!(
                "{object} exists and was not replaced; nothing was changed (--yes replaces it)"
            )));
        }
    }
    tracing::info!(pod = %leader_pod, to = %object, "saving a raft snapshot from the active node");
    let mut upload = location.upload(&name).await.map_err(Failure::failed)?;
    let saved = match save_direct(&leader, &credentials.root_token, &mut upload).await {
        Ok(Some(digested)) => Ok(digested),
        Ok(None) => save_exec(&leader, &leader_pod, &credentials, &mut upload).await,
        Err(failure) => Err(failure),
    };
    let digested = match saved {
        Ok(digested) => digested,
        Err(failure) => {
            upload.abort().await;
            return Err(failure);
        }
    };
    fail::fail_point!("snapshot::before_finish");
    upload.finish().await.map_err(Failure::failed)?;
    let seal = status.seal().name().to_owned();
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        snapshot: name.clone(),
        sha256: digested.sha256,
        size: digested.size,
        cluster_id: status.cluster_id,
        raft_committed_index: raft_index,
        raft_term: None,
        server_version: status.version,
        generation: credentials.generation,
        created_at: now_rfc3339(),
        source_pod: leader_pod.clone(),
        seal,
        restore_test: None,
    };
    let test = args
        .restore_test
        .restore_test
        .then_some(restore_test::Settings {
            sentinel: args.restore_test.sentinel.as_deref(),
            timeout: args.restore_test.restore_test_timeout,
            secret_name: args.store.secret_name.as_deref(),
            pushgateway: args.pushgateway.as_deref(),
        });
    write_and_report(ctx, &location, manifest, object, policy, test).await
}

/// Streams `GET sys/storage/raft/snapshot` from the active node through
/// the direct transport into `upload`, hashing on the way. `Ok(None)` when
/// this command uses exec (or port-forward turned out unavailable under
/// `auto`, before anything was sent).
async fn save_direct(
    leader: &PodNode,
    token: &Secret,
    upload: &mut crate::snapshot::location::Upload,
) -> Result<Option<Digested>, Failure> {
    use crate::transport::direct::Opened;
    let Some(direct) = leader.direct() else {
        return Ok(None);
    };
    match direct
        .link()
        .download("sys/storage/raft/snapshot", token)
        .await
    {
        Ok(reader) => pump(Transfer::start("snapshot", None).reader(reader), upload)
            .await
            .map(Some)
            .map_err(stream_failure),
        Err(Opened::Unavailable(reason)) => {
            leader.unavailable(reason).map_err(Failure::failed)?;
            Ok(None)
        }
        Err(Opened::Failed(e)) => Err(Failure::failed(anyhow::Error::new(e).context(format!(
            "could not stream a snapshot from pod {}; nothing was kept",
            leader.name()
        )))),
    }
}

/// A save whose stream stopped: a store that refused or lost the upload
/// is a failure (exit 2, whether it happened mid-stream or at the commit);
/// a stream that is not a whole snapshot is a refusal (exit 1).
fn stream_failure(e: SnapshotError) -> Failure {
    match e {
        e @ SnapshotError::Write { .. } => {
            Failure::failed(anyhow::Error::new(e).context("nothing was kept"))
        }
        e => Failure::refused(e),
    }
}

/// Streams `operator raft snapshot save /dev/stdout` from the active node
/// through exec into `upload`; aborts the upload on failure.
async fn save_exec(
    leader: &PodNode,
    leader_pod: &str,
    credentials: &Credentials,
    upload: &mut crate::snapshot::location::Upload,
) -> Result<Digested, Failure> {
    let exec = leader.exec();
    let argv = exec.with_token_argv(&["operator", "raft", "snapshot", "save", "/dev/stdout"]);
    let streaming = exec
        .stream(
            argv,
            StreamStdin::<tokio::io::Empty> {
                first_line: Some(token_line(&credentials.root_token)),
                body: None,
            },
            true,
        )
        .await;
    let mut streaming = streaming.map_err(Failure::failed)?;
    let pumped = match streaming.stdout.take() {
        Some(stdout) => pump(Transfer::start("snapshot", None).reader(stdout), upload).await,
        None => Err(SnapshotError::Short { size: 0 }),
    };
    let exit = streaming.wait().await;
    let digested = match (pumped, exit) {
        (Ok(d), Ok((0, _, _))) => d,
        (Err(e), Ok((0, _, _))) => {
            return Err(stream_failure(e));
        }
        (_, Ok((code, _, stderr))) => {
            return Err(Failure::failed(anyhow!(
                "`operator raft snapshot save` on pod {leader_pod} failed: {}; nothing was kept",
                parse_cli_error(&stderr, code)
            )));
        }
        (_, Err(e)) => {
            return Err(Failure::failed(
                anyhow::Error::new(e).context("nothing was kept"),
            ));
        }
    };
    Ok(digested)
}

/// Writes the manifest next to the saved snapshot, applies retention and
/// prints the report.
async fn write_and_report(
    ctx: &Context<'_>,
    location: &Location,
    manifest: Manifest,
    object: String,
    policy: Policy,
    test: Option<restore_test::Settings<'_>>,
) -> Result<(), Failure> {
    location
        .write_manifest(&manifest)
        .await
        .map_err(Failure::failed)?;
    tracing::info!(to = %object, size = manifest.size, sha256 = %manifest.sha256, "snapshot saved");
    // Before retention, so that retention sees the recorded result.
    let tested = match test {
        Some(settings) => Some(
            restore_test::test(ctx, location, &manifest.snapshot, &settings)
                .await
                .map_err(|f| Failure {
                    exit: f.exit,
                    error: f.error.context(format!("{object} was saved")),
                })?,
        ),
        None => None,
    };
    let manifest = match &tested {
        Some(t) => Manifest {
            restore_test: Some(t.record.clone()),
            ..manifest
        },
        None => manifest,
    };
    let pruned = if policy.is_empty() {
        vec![]
    } else {
        prune(location, policy, &manifest.cluster_id)
            .await
            .map_err(Failure::failed)?
    };
    let tested_ok = tested.as_ref().map(restore_test::Outcome::passed);
    // A test refused before it started (no room) is a precondition to fix.
    let tested_refused = tested.as_ref().is_some_and(|t| t.refused);
    let report = SaveReport {
        location: location.to_string(),
        object: object.clone(),
        manifest,
        pruned,
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

/// Applies retention after a successful save, to the snapshots of `cluster`
/// only (a shared prefix may hold other clusters' snapshots, which are
/// theirs to prune): the newest of them that verifies is never deleted.
async fn prune(
    location: &Location,
    policy: Policy,
    cluster: &str,
) -> Result<Vec<String>, SnapshotError> {
    let protected = match location.newest_verified(Some(cluster)).await {
        Ok((name, _)) => Some(name),
        Err(SnapshotError::NoneVerified { .. } | SnapshotError::NoneOfThisCluster { .. }) => None,
        Err(e) => return Err(e),
    };
    let entries = location.list().await?;
    let candidates: Vec<Candidate> = entries
        .iter()
        .filter(|e| e.of_cluster(Some(cluster)))
        .map(|e| Candidate {
            name: e.name.clone(),
            created: e.created(),
            has_manifest: e.manifest.is_some(),
        })
        .collect();
    let doomed = retention::plan(
        &candidates,
        policy,
        protected.as_deref(),
        jiff::Timestamp::now(),
    );
    for name in &doomed {
        tracing::info!(snapshot = %location.object(name), "pruning");
        location.delete(name).await?;
    }
    Ok(doomed)
}
