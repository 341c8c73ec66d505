//! `snapshot verify --restore-test` and `snapshot save --restore-test`.
//!
//! Wires a verified snapshot, the stored credentials and a throwaway server
//! in one of the workload's pods ([`crate::transport::scratch`]) to
//! [`crate::ops::restore_test`]; records the result in the snapshot's
//! manifest, pushes it to a Pushgateway when asked, and reports it. It takes
//! no Lease and writes nothing to the cluster: the live servers are only
//! looked at (to pick a pod), and the stored credentials are only read.

use crate::cmd::snapshot::{require_raft, stored};
use crate::cmd::{Context, Failure};
use crate::ops::checkpoint::now_rfc3339;
use crate::ops::node::{leader, NodeError, VaultNode};
use crate::ops::restore::{for_generation, FeedError, SnapshotFeed};
use crate::ops::restore_test::{Proof, RestoreTestReport, Room, ROOM_MARGIN_BYTES};
use crate::ops::secret::Secret;
use crate::output::log::Transfer;
use crate::snapshot::location::Location;
use crate::snapshot::manifest::{Manifest, RestoreTestRecord, RestoreTestResult};
use crate::snapshot::stream::{Digested, VerifyingReader};
use crate::transport::pod::PodNode;
use crate::transport::scratch::{Memory, ScratchNode, ScratchServer, StartError};
use crate::transport::volume::free_bytes;
use std::time::{Duration, Instant};

mod outcome;
pub(crate) use outcome::Outcome;

/// How a restore-test is run.
pub(crate) struct Settings<'a> {
    pub sentinel: Option<&'a str>,
    pub timeout: Duration,
    pub secret_name: Option<&'a str>,
    pub pushgateway: Option<&'a str>,
}

/// What happened before a verdict, when there is one.
enum Verdict {
    Passed(RestoreTestReport),
    Failed(String),
    Error(String),
    /// Refused before any server started (no room on the data volume, no
    /// seal the throwaway server can take up): recorded as an error, exit 1.
    Refused(String),
}

/// Runs the restore-test of snapshot `name` at `location`. `Err` only for
/// a refusal before any result can be recorded (no manifest to record it
/// in); every other end is an [`Outcome`]. An auto-unseal snapshot is
/// tested on a throwaway server that runs with the live server's seal.
pub(crate) async fn test(
    ctx: &Context<'_>,
    location: &Location,
    name: &str,
    settings: &Settings<'_>,
) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let object = location.object(name);
    let (manifest, verified) = match location.verify_members(name).await {
        Ok((manifest, _, members)) => (manifest, Ok(members.state_bytes)),
        Err(e) => match location.read_manifest(name).await {
            Ok(Some(m)) if m.snapshot == name => (m, Err(e)),
            _ => return Err(Failure::refused(e)),
        },
    };
    let mut started_in = None;
    let verdict = match verified {
        Err(e) => Verdict::Failed(e.to_string()),
        Ok(state_bytes) => {
            let snapshot = Unpacked {
                manifest: &manifest,
                state_bytes,
            };
            run_in_pod(ctx, location, name, snapshot, settings, &mut started_in).await?
        }
    };
    let (pod, server, memory, server_removed) = match started_in {
        Some(s) => (s.pod, Some(s.server), s.memory, s.removed),
        None => (String::new(), None, None, false),
    };
    let refused = matches!(verdict, Verdict::Refused(_));
    let (result, reason, report) = match verdict {
        Verdict::Passed(report) => (RestoreTestResult::Passed, None, Some(report)),
        Verdict::Failed(reason) => (RestoreTestResult::Failed, Some(reason), None),
        Verdict::Error(reason) | Verdict::Refused(reason) => {
            (RestoreTestResult::Error, Some(reason), None)
        }
    };
    let record = RestoreTestRecord {
        result,
        at: now_rfc3339(),
        generation: manifest.generation,
        pod,
        reason,
        peak_memory_bytes: memory.map(|m| m.peak_rss_bytes),
        sentinel: report.as_ref().and_then(|r| r.sentinel.clone()),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let recorded = record_in(location, manifest, &record).await;
    if let Some(url) = settings.pushgateway {
        push(ctx, url, &record).await;
    }
    Ok(Outcome {
        snapshot: object,
        record,
        server,
        report,
        memory,
        server_removed,
        recorded,
        refused,
    })
}

/// Where the throwaway server ran and how it ended.
struct Started {
    pod: String,
    server: String,
    memory: Option<Memory>,
    removed: bool,
}

/// A verified snapshot's manifest and the size of its data unpacked.
#[derive(Clone, Copy)]
struct Unpacked<'a> {
    manifest: &'a Manifest,
    state_bytes: u64,
}

/// Everything after the snapshot verified: the keys, a pod, its room, the
/// server.
async fn run_in_pod(
    ctx: &Context<'_>,
    location: &Location,
    name: &str,
    snapshot: Unpacked<'_>,
    settings: &Settings<'_>,
    started: &mut Option<Started>,
) -> Result<Verdict, Failure> {
    let manifest = snapshot.manifest;
    let cluster = ctx.cluster().await?;
    require_raft(&cluster, "snapshot verify --restore-test").await?;
    let store = ctx.store(&cluster, settings.secret_name);
    let credentials = stored(&store).await?;
    let generation = match for_generation(
        &credentials,
        manifest.generation,
        &manifest.cluster_id,
        &crate::ops::store::CredentialStore::credentials_object(&store),
    ) {
        Ok(g) => g,
        Err(e) => return Ok(Verdict::Failed(e.to_string())),
    };
    let nodes = crate::ops::cluster::VaultCluster::nodes(&cluster)
        .await
        .map_err(Failure::refused)?;
    let Some(pod) = pick_pod(&nodes).await else {
        return Ok(Verdict::Error(format!(
            "no pod of {}/{} answers to host a throwaway server",
            ctx.namespace,
            cluster.workload_name()
        )));
    };
    if let Some(refusal) = no_room(pod, snapshot).await {
        return Ok(refusal);
    }
    let server = match ScratchServer::start(
        pod.exec(),
        settings.timeout + Duration::from_secs(60),
        generation.seal.is_auto(),
    )
    .await
    {
        Ok(s) => s,
        Err(e @ StartError::NoSealConfig { .. }) => {
            return Ok(Verdict::Refused(format!(
                "{e}; nothing was started. Move the seal stanza into an HCL file the server's -config names (or set BAO_SEAL_TYPE or VAULT_SEAL_TYPE and the seal's variables in the container's environment), then re-run `kubectl vault snapshot verify --from {location} --snapshot {name} --restore-test`; meanwhile `kubectl vault snapshot verify --from {location} --snapshot {name}` checks its bytes and manifest"
            )))
        }
        Err(e) if e.is_refusal() => {
            return Ok(Verdict::Refused(format!("{e}; nothing was started")))
        }
        Err(e) => return Ok(Verdict::Error(e.to_string())),
    };
    let feed = ScratchFeed {
        server: &server,
        location,
        name,
        expected: Digested {
            sha256: manifest.sha256.clone(),
            size: manifest.size,
        },
    };
    let proof = Proof {
        generation: &generation,
        tokens: credentials.root_tokens_for(generation.generation),
        sentinel: settings.sentinel,
        timeout: Duration::from_secs(60),
    };
    let ran = tokio::time::timeout(
        settings.timeout,
        crate::ops::restore_test::run(server.node(), &feed, &server, &proof),
    )
    .await;
    let memory = server.memory().await;
    let pod_name = server.pod().to_owned();
    let address = format!("127.0.0.1:{}", server.port());
    let removed = match server.stop().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "the throwaway server was not confirmed removed");
            false
        }
    };
    *started = Some(Started {
        pod: pod_name,
        server: address,
        memory,
        removed,
    });
    Ok(match ran {
        Ok(Ok(report)) => Verdict::Passed(report),
        Ok(Err(e)) if e.is_verdict() => Verdict::Failed(e.to_string()),
        Ok(Err(e)) => Verdict::Error(e.to_string()),
        Err(_) => Verdict::Error(format!(
            "it did not finish within {:?} (--restore-test-timeout)",
            settings.timeout
        )),
    })
}

/// Refuses, before anything starts, when `pod`'s data volume lacks the
/// room the throwaway server needs for `snapshot` ([`Room`]); `None` when
/// it has room.
async fn no_room(pod: &PodNode, snapshot: Unpacked<'_>) -> Option<Verdict> {
    let measured = match free_bytes(pod.exec()).await {
        Ok(free) => free,
        Err(e) => return Some(Verdict::Error(e.to_string())),
    };
    // Tests shrink the volume: `restore_test::free_bytes=return(BYTES)`.
    let free = fail::eval("restore_test::free_bytes", |v| {
        v.and_then(|b| b.parse::<u64>().ok())
    })
    .flatten()
    .unwrap_or(measured);
    let room = Room::for_snapshot(snapshot.manifest.size, snapshot.state_bytes, free);
    let mib = |b: u64| b.div_ceil(1024 * 1024);
    tracing::debug!(
        pod = pod.name(),
        free_mib = mib(room.free),
        needed_mib = mib(room.needed),
        "room for the throwaway server"
    );
    (!room.suffices()).then(|| {
        Verdict::Refused(format!(
            "the data volume {} of pod {} has {} MiB free, and the throwaway server needs about {} MiB there for this snapshot ({} MiB, {} MiB of data unpacked, and a {} MiB margin); nothing was started. Free space on that volume (or grow its PersistentVolumeClaim), then re-run",
            pod.exec().data_dir().unwrap_or("?"),
            pod.name(),
            mib(room.free),
            mib(room.needed),
            mib(snapshot.manifest.size),
            mib(snapshot.state_bytes),
            mib(ROOM_MARGIN_BYTES),
        ))
    })
}

/// A standby pod when there is one (the active node keeps serving without
/// sharing its pod's memory with the test), else any pod that answers.
async fn pick_pod(nodes: &[PodNode]) -> Option<&PodNode> {
    let mut answering = None;
    for node in nodes.iter().rev() {
        if node.exec().data_dir().is_none() {
            continue;
        }
        match leader(node).await {
            Ok(l) if !l.is_self => return Some(node),
            Ok(_) => answering = answering.or(Some(node)),
            Err(e) => {
                tracing::debug!(pod = node.name(), error = %e, "not hosting the restore-test")
            }
        }
    }
    answering.or_else(|| nodes.iter().find(|n| n.exec().data_dir().is_some()))
}

/// Writes `record` into the snapshot's manifest; false (with a warning)
/// when it cannot.
async fn record_in(
    location: &Location,
    mut manifest: Manifest,
    record: &RestoreTestRecord,
) -> bool {
    manifest.restore_test = Some(record.clone());
    match location.write_manifest(&manifest).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not record the restore-test in the manifest");
            false
        }
    }
}

/// Pushes the result (POST: the save's series stay). A push that fails is a
/// warning.
async fn push(ctx: &Context<'_>, url: &str, record: &RestoreTestRecord) {
    let registry = crate::metrics::Registry::default();
    registry.set(
        "kubectl_vault_snapshot_restore_test_success",
        "1 when the last snapshot restore-test passed.",
        &[],
        if record.result == RestoreTestResult::Passed {
            1.0
        } else {
            0.0
        },
    );
    registry.set(
        "kubectl_vault_snapshot_restore_test_timestamp_seconds",
        "When the last snapshot restore-test ended (Unix time).",
        &[],
        jiff::Timestamp::now().as_second() as f64,
    );
    if let Some(peak) = record.peak_memory_bytes {
        registry.set(
            "kubectl_vault_snapshot_restore_test_peak_memory_bytes",
            "The throwaway server's peak resident memory in the last restore-test.",
            &[],
            peak as f64,
        );
    }
    if let Err(e) =
        crate::metrics::push(url, "kubectl_vault_snapshot", &ctx.namespace, &registry).await
    {
        tracing::warn!("{e:#}");
    }
}

/// Streams the verified snapshot into the throwaway server's folder,
/// re-hashing it, then restores that file. A stream whose bytes no longer
/// match is cut before its end and never restored.
struct ScratchFeed<'a> {
    server: &'a ScratchServer,
    location: &'a Location,
    name: &'a str,
    expected: Digested,
}

impl SnapshotFeed<ScratchNode> for ScratchFeed<'_> {
    async fn restore_into(
        &self,
        _node: &ScratchNode,
        token: &Secret,
        force: bool,
    ) -> Result<(), FeedError> {
        let (reader, _) = self
            .location
            .open(self.name)
            .await
            .map_err(|e| FeedError::Interrupted(NodeError::Unreachable(e.to_string())))?;
        let reader = Transfer::start("restore-test", Some(self.expected.size)).reader(reader);
        let (reader, cut) = VerifyingReader::new(reader, self.expected.clone());
        let received = self.server.receive(reader).await;
        if cut.was_cut() {
            return Err(FeedError::Rejected(NodeError::Malformed(format!(
                "{} changed after it was verified; its end was withheld and nothing was restored",
                self.location.object(self.name)
            ))));
        }
        received.map_err(FeedError::Interrupted)?;
        self.server
            .restore_file(token, force)
            .await
            .map_err(|e| match e {
                e @ NodeError::Api { .. } => FeedError::Rejected(e),
                e => FeedError::Interrupted(e),
            })
    }
}
