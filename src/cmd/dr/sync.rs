//! `kubectl vault dr sync`: restore the primary's newest verified snapshot
//! into each standby, with the primary's credentials, then seal it.
//!
//! # Expected flow (per standby)
//! 1. Read the standby's stored credentials (a standby whose credentials
//!    cannot be read or decrypted is refused before anything changes) and
//!    its checkpoint: another operation's checkpoint is a refusal; a
//!    `dr_synced` one for the same snapshot skips to step 4.
//! 2. Unseal the standby with its stored shares (a warm standby rests
//!    sealed), then restore through the one restore path
//!    ([`crate::cmd::snapshot::restore_verified`]) with the primary's
//!    credentials as `--credentials` would give them: every pod reads
//!    through the restored keyring, and the standby's credentials Secret
//!    holds the primary's credentials (its own move into the history),
//!    encrypted for the primary's recipients where the primary's are.
//!
//!    A standby none of whose pods is initialized (a fresh install, or one
//!    whose data was lost) goes through recover's temporary-init path
//!    instead ([`crate::ops::recover::run`]): its credentials Secret takes
//!    the primary's credentials first (recover unseals with what is
//!    stored), then pod 0 is initialized temporarily, the snapshot is
//!    force-restored over it, and every pod is unsealed and read with the
//!    primary's keys. An interrupted recover checkpoint resumes this path.
//! 3. Checkpoint `dr_synced` in the standby's checkpoint Secret.
//! 4. Seal every pod (unless `--standby-unsealed`), record the sync in the
//!    DR state, mark the Secret `standby` at the epoch, delete the checkpoint.
//!
//! # Guarantees
//! Only standbys are written; the primary is read. A crash at any step is
//! finished by a re-run: the restore resumes from its own checkpoint, and a
//! `dr_synced` checkpoint skips the restore.

use crate::cli::dr::{DrRestoreArgs, DrSyncArgs};
use crate::cli::GlobalArgs;
use crate::cmd::dr::{Group, Member};
use crate::cmd::snapshot::{
    restore_inputs, restore_verified, stored, PodRestart, RestoreLimits, VerifiedSnapshot,
};
use crate::cmd::{Context, Failure};
use crate::ops::checkpoint::{now_rfc3339, Checkpoint, Phase, SnapshotRef};
use crate::ops::credentials::Credentials;
use crate::ops::dr::fence::seal_all;
use crate::ops::dr::state::{record, StandbySync};
use crate::ops::keyring::Keyring;
use crate::ops::operation::{claim, Claim, Operation, OtherOperation};
use crate::ops::reconcile::{reconcile, Timeouts};
use crate::ops::recover::{ensure_nothing_initialized, pending_snapshot, RecoverError};
use crate::ops::restore::{adopt, RestoreOptions};
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget};
use crate::output::Printer;
use crate::snapshot::manifest::Manifest;
use crate::snapshot::SnapshotError;
use crate::store::envelope::Sealing;
use crate::store::kube_secret::SecretStore;
use crate::store::sops::Recipient;
use crate::transport::discover::KubeCluster;
use anyhow::anyhow;

/// Where a sync takes its data from.
pub struct Source {
    pub primary: String,
    pub epoch: u64,
    /// The credentials that unseal the snapshot (`None`: the standby's own
    /// stored ones, as in a failover's catch-up).
    pub credentials: Option<Credentials>,
    /// The primary's SOPS recipients (empty: plaintext).
    pub recipients: Vec<Recipient>,
    pub name: String,
    pub manifest: Manifest,
}

/// What one standby's sync did.
#[derive(Debug, serde::Serialize)]
pub struct Synced {
    pub standby: String,
    pub snapshot: String,
    pub raft_index: Option<u64>,
    /// The restore had already finished in an interrupted run.
    pub resumed: bool,
    pub sealed: Vec<String>,
    pub unsealed: bool,
}

pub async fn run(global: &GlobalArgs, printer: &Printer, args: DrSyncArgs) -> Result<(), Failure> {
    let group = Group::open(global, &args.group).await?;
    // Nothing is written (the DR state is not even created) until the
    // primary's snapshot is found.
    let state = match group.peek_state().await? {
        Some(v) => v,
        None => crate::ops::dr::state::Versioned {
            state: crate::ops::dr::state::DrState::new(
                &group.config.name,
                group.config.initial_primary(),
            ),
            version: crate::ops::dr::state::StateVersion {
                revision: 0,
                e_tag: None,
            },
        },
    };
    if let Some(f) = &state.state.failover {
        return Err(Failure::refused(anyhow!(
            "a failover to {} at epoch {} is in progress (by {}); finish it with `kubectl vault dr failover --config {}` first; nothing was changed",
            f.to, f.epoch, f.holder, group.file
        )));
    }
    let primary = &state.state.primary;
    let targets: Vec<&Member> = match &args.standby {
        Some(name) => {
            let m = group.member(name)?;
            if name == primary {
                return Err(Failure::refused(anyhow!(
                    "{name} is the primary at epoch {}; dr sync writes only standbys; nothing was changed",
                    state.state.epoch
                )));
            }
            vec![m]
        }
        None => group
            .members
            .iter()
            .filter(|m| &m.spec.name != primary)
            .collect(),
    };
    let source = primary_source(&group, printer, primary, state.state.epoch).await?;
    group.load_state().await?;
    let mut done = Vec::new();
    for member in targets {
        let synced = sync_standby(
            &group,
            printer,
            member,
            &source,
            !args.standby_unsealed,
            &args.restore,
        )
        .await?;
        done.push(synced);
    }
    printer
        .value(&done, |rows| {
            let mut text = String::new();
            for s in rows {
                text.push_str(&format!(
                    "Synced standby {} from {} ({}, raft index {}){}; {}.\n",
                    s.standby,
                    primary,
                    s.snapshot,
                    s.raft_index.map_or_else(|| "?".into(), |i| i.to_string()),
                    if s.resumed { ", resumed" } else { "" },
                    if s.unsealed {
                        "left unsealed (--standby-unsealed)".to_owned()
                    } else {
                        format!("sealed ({} pods)", s.sealed.len())
                    }
                ));
            }
            text
        })
        .map_err(Failure::failed)
}

/// The primary's credentials and newest verified snapshot of its cluster.
pub async fn primary_source(
    group: &Group,
    printer: &Printer,
    primary: &str,
    epoch: u64,
) -> Result<Source, Failure> {
    let m = group.member(primary)?;
    let cluster = m.cluster(printer).await?;
    let ctx = m.ctx(printer);
    let store = ctx.store(&cluster, None);
    let credentials = stored(&store).await.map_err(|f| Failure {
        exit: f.exit,
        error: f.error.context(format!("primary {primary}")),
    })?;
    let recipients = store
        .recorded_recipients()
        .await
        .map_err(Failure::refused)?;
    let (name, manifest) = newest_verified(group, &credentials.cluster_id, primary).await?;
    // So that the primary alone can find the DR state once it is demoted
    // while unreachable.
    if m.marks(&m.secret_name(&cluster))
        .await
        .as_ref()
        .map(|k| (k.epoch, k.role.as_str()))
        != Some((epoch, "primary"))
    {
        m.mark(
            &m.secret_name(&cluster),
            &group.mark("primary", epoch, primary),
        )
        .await?;
    }
    Ok(Source {
        primary: primary.to_owned(),
        epoch,
        credentials: Some(credentials),
        recipients,
        name,
        manifest,
    })
}

/// The newest snapshot of `cluster_id` at the group's location that verifies.
pub async fn newest_verified(
    group: &Group,
    cluster_id: &str,
    primary: &str,
) -> Result<(String, Manifest), Failure> {
    group
        .location
        .newest_verified(Some(cluster_id))
        .await
        .map_err(|e| match e {
            e @ (SnapshotError::NoneVerified { .. } | SnapshotError::NoneOfThisCluster { .. }) => {
                Failure::refused(anyhow::Error::new(e).context(format!(
                    "no snapshot of primary {primary} (cluster {cluster_id}) to sync from; nothing was changed. Save one with `kubectl vault snapshot save --to {}` against the primary",
                    group.config.snapshots
                )))
            }
            e => Failure::failed(e),
        })
}

/// Syncs one standby from `source`; seals it afterwards when `seal`.
pub async fn sync_standby(
    group: &Group,
    printer: &Printer,
    member: &Member,
    source: &Source,
    seal: bool,
    limits: &DrRestoreArgs,
) -> Result<Synced, Failure> {
    let name = member.spec.name.clone();
    let cluster = member.cluster(printer).await?;
    let ctx = member.ctx(printer);
    let mut store = ctx.store(&cluster, None);
    if !source.recipients.is_empty() {
        store = store.with_sealing(Sealing::Encrypt(source.recipients.clone()));
    }
    let cannot = || {
        format!(
            "standby {name} cannot be synced (run `kubectl vault init` there, or import its credentials with `kubectl vault credentials import`)"
        )
    };
    let own = store
        .load_credentials()
        .await
        .map_err(|e| Failure::refused(anyhow::Error::new(e).context(cannot())))?;
    let checkpoint = store.load_checkpoint().await.map_err(Failure::refused)?;
    let snapshot = SnapshotRef {
        location: group.config.snapshots.clone(),
        name: source.name.clone(),
        sha256: source.manifest.sha256.clone(),
        generation: source.manifest.generation,
    };
    let restored = match claim(checkpoint.as_ref(), Operation::DrSync) {
        Claim::Resume(Checkpoint {
            phase: Phase::DrSynced { snapshot: s, .. },
            ..
        }) if s.sha256 == snapshot.sha256 => true,
        Claim::Free => false,
        // A finished sync of an older snapshot: its restore is done, start anew.
        Claim::Resume(_) => {
            store.delete_checkpoint().await.map_err(Failure::failed)?;
            false
        }
        Claim::Busy(c) if matches!(c.operation(), Operation::Restore | Operation::Recover) => false,
        Claim::Busy(c) => {
            return Err(Failure::refused(OtherOperation::new(
                store.checkpoint_object(),
                c,
            )))
        }
    };
    let timeouts = crate::cmd::snapshot::timeouts(limits.timeout);
    let uninitialized = !restored
        && (pending_snapshot(checkpoint.as_ref()).is_some()
            || nothing_initialized(&cluster, &timeouts).await?);
    if uninitialized {
        recover_standby(
            group,
            &ctx,
            member,
            &cluster,
            &store,
            own.as_ref(),
            source,
            limits,
        )
        .await?;
        checkpoint_synced(group, &store, source, &name, &snapshot).await?;
    } else if !restored {
        let own = own.ok_or_else(|| {
            Failure::refused(
                anyhow!(
                    "no credentials in {}, and its pods are initialized",
                    store.credentials_object()
                )
                .context(cannot()),
            )
        })?;
        // A warm standby rests sealed: unseal it with what it stores.
        reconcile(&cluster, &Keyring::of(&own), &timeouts)
            .await
            .map_err(|e| {
                Failure::failed(anyhow::Error::new(e).context(format!(
                    "could not unseal standby {name} with its stored credentials before the restore; re-run `kubectl vault dr sync --config {} --standby {name}`",
                    group.file
                )))
            })?;
        restore_verified(
            &ctx,
            &cluster,
            &store,
            &VerifiedSnapshot {
                from: &group.config.snapshots,
                location: &group.location,
                name: &source.name,
                manifest: &source.manifest,
            },
            source.credentials.as_ref(),
            &RestoreLimits {
                timeout: limits.timeout,
                stream_timeout: limits.stream_timeout,
                lock_timeout: limits.lock_timeout,
            },
        )
        .await
        .map_err(|f| Failure {
            exit: f.exit,
            error: f.error.context(format!(
                "dr sync of standby {name}; re-run `kubectl vault dr sync --config {} --standby {name}` to resume",
                group.file
            )),
        })?;
        checkpoint_synced(group, &store, source, &name, &snapshot).await?;
    }
    let now_stored = stored(&store).await?;
    let sealed = if seal {
        seal_all(&cluster, &now_stored.root_token)
            .await
            .map_err(|e| {
                Failure::failed(anyhow::Error::new(e).context(format!(
                    "standby {name} holds the new data but could not be sealed; re-run `kubectl vault dr sync --config {} --standby {name}`",
                    group.file
                )))
            })?
            .sealed
    } else {
        vec![]
    };
    let entry = StandbySync {
        snapshot: source.name.clone(),
        raft_index: source.manifest.raft_committed_index,
        snapshot_time: source.manifest.created_at.clone(),
        restored_at: now_rfc3339(),
        cluster_id: source.manifest.cluster_id.clone(),
        primary: source.primary.clone(),
        epoch: source.epoch,
        unsealed: !seal,
    };
    let state = record(&group.state, |s| {
        s.standbys.insert(name.clone(), entry.clone());
        // A demoted primary that took the primary's data rejoins as a standby.
        s.fences.remove(&name);
        true
    })
    .await
    .map_err(Failure::failed)?;
    member
        .mark(
            &member.secret_name(&cluster),
            &group.mark("standby", state.state.epoch, &state.state.primary),
        )
        .await?;
    store.delete_checkpoint().await.map_err(Failure::failed)?;
    Ok(Synced {
        standby: name,
        snapshot: source.name.clone(),
        raft_index: source.manifest.raft_committed_index,
        resumed: restored,
        sealed,
        unsealed: !seal,
    })
}

/// Step 3: the restore (or recover) is done; what remains is sealing and
/// recording.
async fn checkpoint_synced(
    group: &Group,
    store: &SecretStore,
    source: &Source,
    standby: &str,
    snapshot: &SnapshotRef,
) -> Result<(), Failure> {
    let synced = Checkpoint::new(
        &crate::cmd::holder_identity(),
        Phase::DrSynced {
            snapshot: snapshot.clone(),
            standby: standby.to_owned(),
            primary: source.primary.clone(),
            epoch: source.epoch,
            config: Some(group.file.clone()),
        },
    );
    persist(store, Record::Checkpoint(&synced), RetryBudget::default())
        .await
        .map_err(Failure::failed)?;
    fail::fail_point!("dr::sync_after_restore");
    Ok(())
}

/// True when no pod of the standby is initialized (a fresh install, or a
/// standby whose data was lost): it is synced through recover.
pub(super) async fn nothing_initialized(
    cluster: &KubeCluster,
    timeouts: &Timeouts,
) -> Result<bool, Failure> {
    let opts = RestoreOptions {
        holder: crate::cmd::holder_identity(),
        budget: RetryBudget::default(),
        timeouts: timeouts.clone(),
    };
    match ensure_nothing_initialized(cluster, &opts).await {
        Ok(()) => Ok(true),
        Err(RecoverError::AlreadyInitialized { .. }) => Ok(false),
        Err(e) => Err(Failure::failed(e)),
    }
}

/// Step 2 for an uninitialized standby: its credentials Secret takes the
/// primary's credentials first (its own, if any, move into the history),
/// because recover unseals with what is stored; then recover's
/// temporary-init path restores the snapshot under the workload's Lease.
///
/// # Guarantees
/// Nothing is initialized until the credentials that unseal the snapshot
/// are stored. A crash anywhere is finished by a re-run: storing the same
/// credentials again changes nothing, and recover resumes from its own
/// checkpoint (the temporary keys included).
#[allow(clippy::too_many_arguments)]
async fn recover_standby(
    group: &Group,
    ctx: &Context<'_>,
    member: &Member,
    cluster: &KubeCluster,
    store: &SecretStore,
    own: Option<&Credentials>,
    source: &Source,
    limits: &DrRestoreArgs,
) -> Result<(), Failure> {
    let name = &member.spec.name;
    let resume = format!(
        "re-run `kubectl vault dr sync --config {} --standby {name}` to resume",
        group.file
    );
    match (source.credentials.as_ref(), own) {
        (Some(primary), own) => {
            let next = match own {
                None => Some(primary.clone()),
                Some(own) if own.same_secrets(primary) => None,
                Some(own) => adopt(own, Some(primary), primary, None, &primary.cluster_id),
            };
            if let Some(next) = next {
                tracing::info!(standby = %name, "storing the primary's credentials before recovering the uninitialized standby");
                persist(store, Record::Credentials(&next), RetryBudget::default())
                    .await
                    .map_err(|e| Failure::failed(anyhow::Error::new(e).context(resume.clone())))?;
                fail::fail_point!("dr::sync_after_credentials");
            }
        }
        (None, Some(_)) => {}
        (None, None) => {
            return Err(Failure::refused(anyhow!(
                "standby {name} is not initialized and stores no credentials; sync it from the primary with `kubectl vault dr sync --config {} --standby {name}`",
                group.file
            )))
        }
    }
    let (snapshot, feed, opts) = restore_inputs(
        &group.config.snapshots,
        &group.location,
        &source.name,
        &source.manifest,
        limits.timeout,
        limits.stream_timeout,
    );
    let restart = PodRestart::new(ctx);
    let guard = ctx.lock(cluster, limits.lock_timeout).await?;
    let result = guard
        .fenced(crate::ops::recover::run(
            cluster, store, &feed, &restart, &snapshot, &opts,
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
        | RecoverError::Rejected { .. }) => {
            Failure::refused(anyhow::Error::new(e).context(format!("dr sync of standby {name}")))
        }
        e => Failure::failed(
            anyhow::Error::new(e).context(format!("dr sync of standby {name}; {resume}")),
        ),
    })?;
    tracing::info!(standby = %name, snapshot = %report.snapshot, resumed = report.resumed, "recovered the uninitialized standby from the primary's snapshot");
    Ok(())
}
