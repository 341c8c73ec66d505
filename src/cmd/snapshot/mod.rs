//! `kubectl vault snapshot save|list|verify|restore`.
//!
//! Save streams `GET sys/storage/raft/snapshot` from the active pod through
//! the direct transport (with exec: `operator raft snapshot save
//! /dev/stdout`) into the target while hashing it, writes the manifest, then
//! applies retention (to this cluster's snapshots only). Restore verifies
//! first (the manifest, and that the bytes are a raft snapshot), asks, takes
//! the lock and runs the restore state machine with a feed that streams the
//! file back in (`POST sys/storage/raft/snapshot[-force]`, or the CLI through
//! exec), hashing it and withholding its end unless it still matches.

use crate::cli::snapshot::{ListArgs, RestoreArgs, SaveArgs, SnapshotCommand, VerifyArgs};
use crate::cmd::{holder_identity, Context, Failure};
use crate::ops::checkpoint::{now_rfc3339, SnapshotRef};
use crate::ops::cluster::ClusterError;
use crate::ops::cluster::VaultCluster;
use crate::ops::converge::ServerRestart;
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, NodeError, Request, StorageKind, VaultNode};
use crate::ops::reconcile::{wait_for_leader, Timeouts};
use crate::ops::restore::{for_generation, FeedError, RestoreError, RestoreOptions, SnapshotFeed};
use crate::ops::secret::{Secret, SecretBytes};
use crate::ops::store::{CredentialStore, RetryBudget};
use crate::output::log::Transfer;
use crate::output::{table, Printer};
use crate::snapshot::location::{Entry, Existing, Location, Verification};
use crate::snapshot::manifest::{Manifest, MANIFEST_SCHEMA};
use crate::snapshot::retention::{self, Candidate, Policy};
use crate::snapshot::stream::{pump, Digested, VerifyingReader};
use crate::snapshot::{plain_name, SnapshotError};
use crate::transport::discover::KubeCluster;
use crate::transport::exec::{parse_cli_error, StreamStdin};
use crate::transport::pod::PodNode;
use anyhow::anyhow;
use std::time::Duration;

mod restore_test;

/// `list` and `verify` need no cluster (`verify --restore-test` does).
pub fn is_offline(command: &SnapshotCommand) -> bool {
    match command {
        SnapshotCommand::List(_) => true,
        SnapshotCommand::Verify(args) => !args.restore_test.restore_test,
        _ => false,
    }
}

pub async fn run_offline(printer: &Printer, command: SnapshotCommand) -> Result<(), Failure> {
    match command {
        SnapshotCommand::List(args) => list(printer, args).await,
        SnapshotCommand::Verify(args) => verify(printer, args).await,
        _ => Ok(()),
    }
}

pub async fn run(ctx: &Context<'_>, command: SnapshotCommand) -> Result<(), Failure> {
    match command {
        SnapshotCommand::Save(args) => {
            let push = args.pushgateway.clone().map(|url| (url, args.to.clone()));
            let saved = save(ctx, args).await;
            if let Some((url, to)) = push {
                push_outcome(ctx, &url, &to, saved.is_ok()).await;
            }
            saved
        }
        SnapshotCommand::Restore(args) => restore(ctx, args).await,
        SnapshotCommand::Verify(args) if args.restore_test.restore_test => {
            verify_restore_test(ctx, args).await
        }
        other => run_offline(ctx.printer, other).await,
    }
}

fn parse(text: &str) -> Result<Location, Failure> {
    Location::parse(text).map_err(Failure::refused)
}

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
async fn push_outcome(ctx: &Context<'_>, url: &str, to: &str, ok: bool) {
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

async fn save(ctx: &Context<'_>, args: SaveArgs) -> Result<(), Failure> {
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

#[derive(Debug, serde::Serialize)]
struct Listed {
    #[serde(flatten)]
    entry: Entry,
    status: Verification,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

async fn list(printer: &Printer, args: ListArgs) -> Result<(), Failure> {
    let location = parse(&args.from)?;
    let entries = location.list().await.map_err(Failure::failed)?;
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut status = entry.quick_status();
        let mut problem = None;
        if args.verify && status == Verification::ManifestOk {
            match location.verify(&entry.name).await {
                Ok(_) => status = Verification::Verified,
                Err(e) => {
                    status = Verification::Corrupt;
                    problem = Some(e.to_string());
                }
            }
        }
        rows.push(Listed {
            entry,
            status,
            problem,
        });
    }
    printer
        .value(&rows, |rows| {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let m = r.entry.manifest.as_ref();
                    vec![
                        r.entry.name.clone(),
                        r.entry.size.to_string(),
                        m.map(|m| m.created_at.clone()).unwrap_or_default(),
                        m.map(|m| m.generation.to_string()).unwrap_or_default(),
                        m.and_then(|m| m.raft_committed_index)
                            .map(|i| i.to_string())
                            .unwrap_or_default(),
                        serde_json::to_value(r.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        m.and_then(|m| m.restore_test.as_ref())
                            .map(|t| format!("{} {}", t.result.name(), t.at))
                            .unwrap_or_else(|| "-".to_owned()),
                    ]
                })
                .collect();
            table(
                &[
                    "NAME",
                    "SIZE",
                    "CREATED",
                    "GENERATION",
                    "RAFT INDEX",
                    "STATUS",
                    "RESTORE TEST",
                ],
                &cells,
            )
        })
        .map_err(Failure::failed)
}

/// The snapshot `--from` (and `--snapshot`) name: the file itself, the named
/// one, or the newest with a manifest.
async fn pick(location: &Location, name: Option<&str>) -> Result<String, Failure> {
    if let Some(n) = name {
        plain_name(n).map_err(Failure::refused)?;
        return Ok(n.to_owned());
    }
    if !location.is_collection() {
        return Ok(location.name_for("", jiff::Timestamp::now()));
    }
    let entries = location.list().await.map_err(Failure::failed)?;
    entries
        .into_iter()
        .find(|e| e.manifest.is_some())
        .map(|e| e.name)
        .ok_or_else(|| {
            Failure::refused(SnapshotError::NoneVerified {
                location: location.to_string(),
            })
        })
}

async fn verify(printer: &Printer, args: VerifyArgs) -> Result<(), Failure> {
    let location = parse(&args.from)?;
    let name = pick(&location, args.snapshot.as_deref()).await?;
    let (manifest, _) = location.verify(&name).await.map_err(Failure::refused)?;
    printer
        .value(&manifest, |m| {
            format!(
                "{} verified: {} bytes, sha256 {}, key generation {}, taken {}.\n",
                location.object(&name),
                m.size,
                m.sha256,
                m.generation,
                m.created_at
            )
        })
        .map_err(Failure::failed)
}

/// `verify --restore-test`: the restore-test of the snapshot `verify` picks.
async fn verify_restore_test(ctx: &Context<'_>, args: VerifyArgs) -> Result<(), Failure> {
    let location = parse(&args.from)?;
    let name = pick(&location, args.snapshot.as_deref()).await?;
    let settings = restore_test::Settings {
        sentinel: args.restore_test.sentinel.as_deref(),
        timeout: args.restore_test.restore_test_timeout,
        secret_name: args.store.secret_name.as_deref(),
        pushgateway: args.pushgateway.as_deref(),
    };
    let outcome = restore_test::test(ctx, &location, &name, &settings).await?;
    ctx.printer
        .value(&outcome, restore_test::Outcome::text)
        .map_err(Failure::failed)?;
    outcome.into_result()
}

async fn restore(ctx: &Context<'_>, args: RestoreArgs) -> Result<(), Failure> {
    let location = parse(&args.from)?;
    let cluster = ctx.cluster().await?;
    require_raft(&cluster, "snapshot restore").await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let stored = stored(&store).await?;
    // An interrupted restore names its snapshot; resume with that one.
    let pending = store.load_checkpoint().await.map_err(Failure::refused)?;
    let pending_name = pending.as_ref().and_then(|c| match &c.phase {
        crate::ops::checkpoint::Phase::RestorePending { snapshot }
        | crate::ops::checkpoint::Phase::RestoreApplied {
            snapshot,
            recover: false,
        } if args.snapshot.is_none() && location.is_collection() => Some(snapshot.name.clone()),
        _ => None,
    });
    let nothing_changed =
        |e: SnapshotError| Failure::refused(anyhow::Error::new(e).context("nothing was changed"));
    let name = match pending_name {
        Some(n) => n,
        None if location.is_collection() && args.snapshot.is_none() => {
            let cluster_id = (!args.allow_foreign_cluster).then_some(stored.cluster_id.as_str());
            location
                .newest_verified(cluster_id)
                .await
                .map_err(nothing_changed)?
                .0
        }
        None => pick(&location, args.snapshot.as_deref()).await?,
    };
    let (manifest, _) = location.verify(&name).await.map_err(nothing_changed)?;
    let nodes = cluster.nodes().await.map_err(Failure::refused)?;
    let target = futures::future::join_all(nodes.iter().map(seal_status))
        .await
        .into_iter()
        .find_map(Result::ok)
        .ok_or_else(|| {
            Failure::refused(anyhow!(
                "no pod answers its seal status; nothing was changed"
            ))
        })?;
    crate::ops::seal::restore_fits(
        &manifest.seal,
        &manifest.cluster_id,
        &target.seal(),
        &target.cluster_id,
        args.same_seal_key,
    )
    .map_err(|e| Failure::refused(anyhow::Error::new(e).context("nothing was changed")))?;
    let explicit = match &args.credentials {
        Some(path) => Some(read_credentials(ctx, path).await?),
        None => None,
    };
    let unseal_generation = match &explicit {
        Some(c) => c.generation,
        None => {
            for_generation(
                &stored,
                manifest.generation,
                &manifest.cluster_id,
                &store.credentials_object(),
            )
            .map_err(Failure::refused)?
            .generation
        }
    };
    if !ctx.confirm(&format!(
        "Restore {} (taken {} from cluster {}, raft index {}) into {}/{}? Every secret written since is lost",
        location.object(&name),
        manifest.created_at,
        if manifest.cluster_id.is_empty() { "?" } else { &manifest.cluster_id },
        manifest
            .raft_committed_index
            .map_or_else(|| "?".to_owned(), |i| i.to_string()),
        ctx.namespace,
        cluster.workload_name()
    ))? {
        return Err(Failure::refused(anyhow!(
            "the restore was not confirmed; nothing was changed"
        )));
    }
    let report = restore_verified(
        ctx,
        &cluster,
        &store,
        &VerifiedSnapshot {
            from: &args.from,
            location: &location,
            name: &name,
            manifest: &manifest,
        },
        explicit.as_ref(),
        &RestoreLimits {
            timeout: args.timeout,
            stream_timeout: args.stream_timeout,
            lock_timeout: args.store.lock_timeout,
        },
    )
    .await?;
    let source = if explicit.is_some() {
        "the credentials given with --credentials".to_owned()
    } else if unseal_generation == stored.generation {
        format!("the current stored credentials (generation {unseal_generation})")
    } else {
        format!("retired key generation {unseal_generation} from the credentials history")
    };
    ctx.printer
        .value(&report, |r| {
            let mut text = format!(
                "Restored {} into {}/{}{}; unsealed {} pods with {source}; leader {}.\n",
                location.object(&r.snapshot),
                ctx.namespace,
                cluster.workload_name(),
                if r.forced { " (forced)" } else { "" },
                r.reconcile.pods.len(),
                r.reconcile.leader
            );
            text.push_str(&crate::cmd::snapshot::remedied(&r.pods));
            if r.credentials_replaced {
                text.push_str(&format!(
                    "{} now holds the credentials that unseal the restored data; the replaced ones are kept in its history.\n",
                    store.credentials_object()
                ));
            } else if r.credentials_updated {
                text.push_str(&format!(
                    "{} now holds key generation {} and the root token of the restored data as current; the previous ones are kept in its history.\n",
                    store.credentials_object(),
                    r.generation
                ));
            }
            if !r.root_token_valid {
                text.push_str("Warning: no stored root token is valid in the restored data.\n");
            }
            text
        })
        .map_err(Failure::failed)
}

/// A snapshot chosen and verified at its location.
pub(crate) struct VerifiedSnapshot<'a> {
    /// The location as the user gave it (kept in the checkpoint).
    pub from: &'a str,
    pub location: &'a Location,
    pub name: &'a str,
    pub manifest: &'a Manifest,
}

/// The deadlines of one restore.
pub(crate) struct RestoreLimits {
    pub timeout: Duration,
    pub stream_timeout: Duration,
    pub lock_timeout: Duration,
}

/// The one restore path: takes the workload's Lease and runs
/// [`crate::ops::restore::run`] for a verified snapshot, mapping its errors
/// to refusals (nothing changed) and failures (re-run resumes). Used by
/// `snapshot restore` and `dr sync`; the caller has confirmed.
pub(crate) async fn restore_verified(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    store: &crate::store::kube_secret::SecretStore,
    verified: &VerifiedSnapshot<'_>,
    explicit: Option<&Credentials>,
    limits: &RestoreLimits,
) -> Result<crate::ops::restore::RestoreReport, Failure> {
    let (snapshot, feed, opts) = restore_inputs(
        verified.from,
        verified.location,
        verified.name,
        verified.manifest,
        limits.timeout,
        limits.stream_timeout,
    );
    let restart = PodRestart::new(ctx);
    let guard = ctx.lock(cluster, limits.lock_timeout).await?;
    let result = guard
        .fenced(crate::ops::restore::run(
            cluster,
            store,
            &feed,
            &restart,
            &snapshot,
            &verified.manifest.cluster_id,
            explicit,
            &opts,
        ))
        .await
        .map_err(Failure::failed)?;
    result.map_err(|e| match e {
        e @ (RestoreError::NewerGeneration { .. }
        | RestoreError::MissingGeneration { .. }
        | RestoreError::NoCredentials { .. }
        | RestoreError::OtherOperation { .. }
        | RestoreError::OtherSnapshot { .. }
        | RestoreError::Rejected { .. }) => Failure::refused(e),
        e => Failure::failed(
            anyhow::Error::new(e)
                .context("the restore did not finish; re-run `kubectl vault snapshot restore` with the same --from to resume"),
        ),
    })
}

pub(crate) fn timeouts(timeout: Duration) -> Timeouts {
    Timeouts {
        leader: timeout,
        pod_appear: timeout,
        peers: timeout,
    }
}

/// Refuses (exit 1, nothing changed) when a server reports storage other
/// than raft: file storage (the charts' standalone default) has no raft
/// snapshots to save or restore.
pub(crate) async fn require_raft(cluster: &KubeCluster, command: &str) -> Result<(), Failure> {
    let nodes = cluster.nodes().await.map_err(Failure::refused)?;
    let statuses = futures::future::join_all(nodes.iter().map(seal_status)).await;
    let other = statuses
        .into_iter()
        .flatten()
        .find_map(|s| match s.storage() {
            StorageKind::Other(kind) => Some(kind),
            _ => None,
        });
    match other {
        Some(kind) => Err(Failure::refused(anyhow!(
            "{command} needs raft storage, but {}/{} runs on {kind} storage, which has no raft snapshots; nothing was changed. \
             Move it to raft with `kubectl vault migrate` (file to raft) first; until then, back up the data volume itself",
            cluster.namespace(),
            cluster.workload_name()
        ))),
        None => Ok(()),
    }
}

pub(crate) async fn stored(store: &impl CredentialStore) -> Result<Credentials, Failure> {
    store
        .load_credentials()
        .await
        .map_err(Failure::refused)?
        .ok_or_else(|| {
            Failure::refused(anyhow!(
                "no credentials in {}; snapshots need the cluster's root token: run `kubectl vault init` or `kubectl vault credentials import`",
                store.credentials_object()
            ))
        })
}

async fn read_credentials(
    ctx: &Context<'_>,
    path: &std::path::Path,
) -> Result<Credentials, Failure> {
    let file = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Failure::refused(anyhow!("could not read {file}: {e}")))?;
    let envelope = ctx.envelope();
    let ids = envelope.identities(&file).await.map_err(Failure::refused)?;
    let imported = crate::store::manifest::import(&text, &file, ids)
        .map_err(|e| Failure::refused(anyhow::Error::new(e).context("nothing was changed")))?;
    imported.credentials.validate().map_err(|e| {
        Failure::refused(anyhow!(
            "{file} holds unusable credentials: {e}; nothing was changed"
        ))
    })?;
    Ok(imported.credentials)
}

fn token_line(token: &Secret) -> SecretBytes {
    SecretBytes::new(token.expose().as_bytes().to_vec())
}

/// What `snapshot restore` and `recover` hand the state machines for the
/// snapshot they chose and verified (`name`): its checkpoint reference, the
/// exec feed that streams it into the pod, and the options.
pub(crate) fn restore_inputs(
    from: &str,
    location: &Location,
    name: &str,
    manifest: &Manifest,
    timeout: Duration,
    stream_timeout: Duration,
) -> (SnapshotRef, ExecFeed, RestoreOptions) {
    let snapshot = SnapshotRef {
        location: from.to_owned(),
        name: name.to_owned(),
        sha256: manifest.sha256.clone(),
        generation: manifest.generation,
    };
    let feed = ExecFeed {
        location: location.clone(),
        name: name.to_owned(),
        expected: Digested {
            sha256: manifest.sha256.clone(),
            size: manifest.size,
        },
        deadline: stream_timeout,
    };
    let opts = RestoreOptions {
        holder: holder_identity(),
        budget: RetryBudget::default(),
        timeouts: timeouts(timeout),
    };
    (snapshot, feed, opts)
}

/// Streams a verified snapshot from its location into a pod's
/// `operator raft snapshot restore`, re-hashing it on the way and holding
/// its end back unless it still matches what was verified.
pub(crate) struct ExecFeed {
    pub location: Location,
    /// The verified name: what is opened, whatever a manifest says.
    pub name: String,
    pub expected: Digested,
    /// The whole stream, from opening the snapshot to the command's exit.
    pub deadline: Duration,
}

impl SnapshotFeed<PodNode> for ExecFeed {
    async fn restore_into(
        &self,
        node: &PodNode,
        token: &Secret,
        force: bool,
    ) -> Result<(), FeedError> {
        let deadline = self.deadline;
        let streamed = tokio::time::timeout(deadline, self.stream(node, token, force)).await;
        streamed.unwrap_or_else(|_| {
            Err(FeedError::Interrupted(NodeError::Unreachable(format!(
                "the snapshot stream into pod {} did not finish within {deadline:?} (--stream-timeout)",
                node.name()
            ))))
        })
    }
}

impl ExecFeed {
    /// Through the direct transport when this command uses it, else exec.
    async fn stream(&self, node: &PodNode, token: &Secret, force: bool) -> Result<(), FeedError> {
        use crate::transport::direct::Opened;
        if let Some(direct) = node.direct() {
            match self.stream_direct(direct, token, force).await {
                Err(Opened::Unavailable(reason)) => {
                    node.unavailable(reason).map_err(FeedError::Interrupted)?;
                }
                Err(Opened::Failed(e)) => {
                    return Err(match e {
                        NodeError::Unreachable(_) | NodeError::PodGone(_) => {
                            FeedError::Interrupted(e)
                        }
                        other => FeedError::Rejected(other),
                    })
                }
                Ok(()) => return Ok(()),
            }
        }
        self.stream_exec(node, token, force).await
    }

    /// `POST sys/storage/raft/snapshot[-force]` with the file as the body,
    /// hashed on the way, its end withheld unless it still matches.
    async fn stream_direct(
        &self,
        direct: &crate::transport::direct::DirectNode,
        token: &Secret,
        force: bool,
    ) -> Result<(), crate::transport::direct::Opened> {
        use crate::transport::direct::Opened;
        let (reader, _) = self
            .location
            .open(&self.name)
            .await
            .map_err(|e| Opened::Failed(NodeError::Unreachable(e.to_string())))?;
        let reader = Transfer::start("restore", Some(self.expected.size)).reader(reader);
        let (reader, cut) = VerifyingReader::new(reader, self.expected.clone());
        let path = if force {
            "sys/storage/raft/snapshot-force"
        } else {
            "sys/storage/raft/snapshot"
        };
        let sent = direct
            .link()
            .upload(path, token, reader, self.expected.size)
            .await;
        if cut.was_cut() {
            return Err(Opened::Failed(NodeError::Malformed(format!(
                "{} changed after it was verified; its end was withheld, so the server received no complete snapshot",
                self.location.object(&self.name)
            ))));
        }
        sent.map(|_| ())
    }

    async fn stream_exec(
        &self,
        node: &PodNode,
        token: &Secret,
        force: bool,
    ) -> Result<(), FeedError> {
        let (reader, _) = self
            .location
            .open(&self.name)
            .await
            .map_err(|e| FeedError::Rejected(NodeError::Unreachable(e.to_string())))?;
        let reader = Transfer::start("restore", Some(self.expected.size)).reader(reader);
        let (reader, cut) = VerifyingReader::new(reader, self.expected.clone());
        let mut args = vec!["operator", "raft", "snapshot", "restore"];
        if force {
            args.push("-force");
        }
        args.push("/dev/stdin");
        let node = node.exec();
        let streaming = node
            .stream(
                node.with_token_argv(&args),
                StreamStdin {
                    first_line: Some(token_line(token)),
                    body: Some(reader),
                },
                false,
            )
            .await
            .map_err(FeedError::Interrupted)?;
        let (code, _, stderr) = streaming.wait().await.map_err(FeedError::Interrupted)?;
        if cut.was_cut() {
            return Err(FeedError::Rejected(NodeError::Malformed(format!(
                "{} changed after it was verified; its end was withheld, so the server received no complete snapshot",
                self.location.object(&self.name)
            ))));
        }
        if code != 0 {
            return Err(FeedError::Rejected(parse_cli_error(&stderr, code)));
        }
        Ok(())
    }
}

/// Restarts a server by deleting its pod: the StatefulSet recreates it with
/// its data volume, sealed. Needs `delete` on pods, which an operator running
/// `snapshot restore` or `recover` has; it is used only for a pod that still
/// holds the old keyring after a forced restore.
pub(crate) struct PodRestart {
    pods: kube::Api<k8s_openapi::api::core::v1::Pod>,
}

impl PodRestart {
    pub(crate) fn new(ctx: &Context<'_>) -> Self {
        PodRestart {
            pods: kube::Api::namespaced(ctx.client.clone(), &ctx.namespace),
        }
    }
}

/// How long a deleted pod may take to be replaced: its grace period (the
/// charts' 10 s), scheduling and the container's start.
const REPLACEMENT_DEADLINE: Duration = Duration::from_secs(180);

impl PodRestart {
    /// Waits until pod `pod` is a new object (not `old_uid`), Running and
    /// not itself being deleted: a deleted pod stays Terminating for its
    /// grace period, then Pending, before its successor runs.
    async fn wait_for_successor(&self, pod: &str, old_uid: &str) -> Result<(), ClusterError> {
        let replaced = crate::ops::wait::poll_until(
            REPLACEMENT_DEADLINE,
            Duration::from_millis(500),
            || async {
                let p = self.pods.get_opt(pod).await.ok()??;
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                (p.metadata.uid.as_deref() != Some(old_uid)
                    && p.metadata.deletion_timestamp.is_none()
                    && running)
                    .then_some(())
            },
        )
        .await;
        replaced.ok_or_else(|| ClusterError::PodMissing {
            pod: pod.to_owned(),
            waited: REPLACEMENT_DEADLINE,
        })
    }
}

impl ServerRestart for PodRestart {
    /// Deletes the pod and returns once its successor runs.
    async fn restart(&self, pod: &str) -> Result<(), ClusterError> {
        tracing::info!(pod, "deleting the pod so that it restarts sealed");
        let old_uid = match self.pods.get_opt(pod).await {
            Ok(found) => found.and_then(|p| p.metadata.uid).unwrap_or_default(),
            Err(e) => {
                return Err(ClusterError::List(format!(
                    "get pod {pod}: {}",
                    crate::transport::api_reason(&e)
                )))
            }
        };
        match self
            .pods
            .delete(pod, &kube::api::DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(pod, "waiting for the pod's successor to run");
                self.wait_for_successor(pod, &old_uid).await
            }
            Err(kube::Error::Api(s)) if s.code == 403 => Err(ClusterError::Forbidden {
                action: format!("delete pod {pod}"),
                reason: s.message,
            }),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(ClusterError::List(format!(
                "delete pod {pod}: {}",
                crate::transport::api_reason(&e)
            ))),
        }
    }
}

/// The line naming the pods that still held the old keyring after a restore
/// and were brought onto the restored one; empty when there were none.
pub(crate) fn remedied(pods: &[crate::ops::converge::PodReading]) -> String {
    let fixed: Vec<String> = pods
        .iter()
        .filter(|p| p.remedy != crate::ops::converge::Remedy::None)
        .map(|p| format!("{} ({})", p.pod, p.remedy))
        .collect();
    if fixed.is_empty() {
        return String::new();
    }
    format!(
        "Pods that still held the old keyring were brought onto the restored one: {}.\n",
        fixed.join(", ")
    )
}
