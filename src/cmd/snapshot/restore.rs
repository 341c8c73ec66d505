//! `snapshot restore` and the one restore path that `recover` and `dr`
//! share: verify first (the manifest, and that the bytes are a raft
//! snapshot), ask, take the lock and run the restore state machine with a
//! feed that streams the file back in (`POST sys/storage/raft/snapshot[-force]`,
//! or the CLI through exec), hashing it and withholding its end unless it
//! still matches.

use crate::cli::snapshot::RestoreArgs;
use crate::cmd::{holder_identity, Context, Failure};
use crate::ops::checkpoint::SnapshotRef;
use crate::ops::cluster::ClusterError;
use crate::ops::cluster::VaultCluster;
use crate::ops::converge::ServerRestart;
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, NodeError, VaultNode};
use crate::ops::restore::{for_generation, FeedError, RestoreError, RestoreOptions, SnapshotFeed};
use crate::ops::secret::Secret;
use crate::ops::store::{CredentialStore, RetryBudget};
use crate::output::log::Transfer;
use crate::snapshot::location::Location;
use crate::snapshot::manifest::Manifest;
use crate::snapshot::stream::{Digested, VerifyingReader};
use crate::snapshot::SnapshotError;
use crate::transport::discover::KubeCluster;
use crate::transport::exec::{parse_cli_error, StreamStdin};
use crate::transport::pod::PodNode;
use anyhow::anyhow;
use std::time::Duration;

use super::{parse, pick, require_raft, stored, timeouts, token_line};

pub(super) async fn restore(ctx: &Context<'_>, args: RestoreArgs) -> Result<(), Failure> {
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
