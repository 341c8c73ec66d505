//! `kubectl vault snapshot save|list|verify|restore`.
//!
//! Save runs `ops::snapshot_save` with the active pod as its source
//! (`GET sys/storage/raft/snapshot` through the direct transport, with exec
//! `operator raft snapshot save /dev/stdout`) and the target as its store:
//! the target receives the stream while it is hashed, then the manifest;
//! then retention (to this cluster's snapshots only). Restore verifies
//! first (the manifest, and that the bytes are a raft snapshot), asks, takes
//! the lock and runs the restore state machine with a feed that streams the
//! file back in (`POST sys/storage/raft/snapshot[-force]`, or the CLI through
//! exec), hashing it and withholding its end unless it still matches.

use crate::cli::snapshot::{ListArgs, SnapshotCommand, VerifyArgs};
use crate::cmd::{Context, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, StorageKind};
use crate::ops::reconcile::Timeouts;
use crate::ops::secret::{Secret, SecretBytes};
use crate::ops::store::CredentialStore;
use crate::output::{table, Printer};
use crate::snapshot::location::{Entry, Location, Verification};
use crate::snapshot::{plain_name, SnapshotError};
use crate::transport::discover::KubeCluster;
use anyhow::anyhow;
use std::time::Duration;

mod restore;
mod restore_test;
mod save;
mod source;

pub(crate) use restore::{
    remedied, restore_inputs, restore_verified, PodRestart, RestoreLimits, VerifiedSnapshot,
};

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
            let saved = save::save(ctx, args).await;
            if let Some((url, to)) = push {
                save::push_outcome(ctx, &url, &to, saved.is_ok()).await;
            }
            saved
        }
        SnapshotCommand::Restore(args) => restore::restore(ctx, args).await,
        SnapshotCommand::Verify(args) if args.restore_test.restore_test => {
            verify_restore_test(ctx, args).await
        }
        other => run_offline(ctx.printer, other).await,
    }
}

pub(super) fn parse(text: &str) -> Result<Location, Failure> {
    Location::parse(text).map_err(Failure::refused)
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
pub(super) async fn pick(location: &Location, name: Option<&str>) -> Result<String, Failure> {
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

pub(super) fn token_line(token: &Secret) -> SecretBytes {
    SecretBytes::new(token.expose().as_bytes().to_vec())
}
