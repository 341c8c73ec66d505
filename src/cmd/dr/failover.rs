//! `kubectl vault dr failover`: promote a standby and fence the old primary.
//!
//! # Expected flow
//! 1. Decide: `--to NAME`, or the best score among the standbys. `auto`
//!    refuses while the primary is healthy (an active leader answers); any
//!    choice refuses a standby that cannot be chosen, and none healthy.
//! 2. Take the next epoch with one conditional write of the DR state, which
//!    also records the decision and the failover in progress. A run that
//!    loses the write exits 1 naming the winner.
//! 3. Fence the old primary: reachable, every pod is sealed with its stored
//!    token and its credentials Secret is marked `demoted` at the epoch;
//!    unreachable, the fence is recorded in the DR state.
//! 4. Catch up: a snapshot of the data newer than the one the standby holds
//!    is restored into it (the one restore path, with its own credentials).
//! 5. Promote: unseal every pod with the standby's stored credentials (the
//!    primary's, since its last sync), prove each pod reads, mark its
//!    Secret `primary`, and make it the primary in the DR state.
//! 6. Report what clients must switch: the new primary's address and, for
//!    each target `spec.clients` names, the `kubectl patch` that points it
//!    there ([`super::clients`]). Printed, never run.
//!
//! # Guarantees
//! Each step is recorded in the DR state before the next begins, with a
//! failpoint after it. A re-run finds the failover in progress and, once
//! its holder is gone (a process of this host that no longer runs), goes
//! on with the same choice from the step after the last one recorded. A
//! failover never initializes a cluster that holds data and writes no
//! credentials but the chosen standby's (through the restore of step 4).
//!
//! # Caveats
//! A chosen standby none of whose pods is initialized any more (its data
//! was lost after the decision) is caught up through `sync`'s path for such
//! a standby: recover's temporary init of pod 0, resumable from recover's
//! checkpoint, so exactly one `sys/init` however often it is interrupted.

use crate::cli::dr::DrFailoverArgs;
use crate::cli::GlobalArgs;
use crate::cmd::dr::clients::{address, switches, ClientSwitch};
use crate::cmd::dr::guard::DEMOTED;
use crate::cmd::dr::status::{gather, GroupView};
use crate::cmd::dr::sync::{nothing_initialized, sync_standby, Source};
use crate::cmd::dr::Group;
use crate::cmd::snapshot::stored;
use crate::cmd::{holder_identity, Failure};
use crate::ops::checkpoint::now_rfc3339;
use crate::ops::cluster::VaultCluster;
use crate::ops::dr::fence::seal_all;
use crate::ops::dr::holder_gone;
use crate::ops::dr::score::choose;
use crate::ops::dr::state::{
    advance, take_epoch, Decision, FailoverProgress, FailoverStep, Fence, FenceKind, ScoreRecord,
    TakeEpochError,
};
use crate::ops::keyring::Keyring;
use crate::ops::reconcile::reconcile;
use crate::ops::recover::pending_snapshot;
use crate::ops::restore::token_works;
use crate::ops::store::CredentialStore;
use crate::output::Printer;
use anyhow::anyhow;
use std::time::Duration;

/// What a finished failover reports.
#[derive(Debug, serde::Serialize)]
pub struct FailoverReport {
    pub epoch: u64,
    pub from: String,
    pub to: String,
    /// `sealed` or `recorded`.
    pub fence: FenceKind,
    /// A snapshot restored to catch up, if one was newer.
    pub caught_up: Option<String>,
    pub resumed: bool,
    /// Pods of the new primary that read with its stored token.
    pub pods: Vec<String>,
    /// Where clients must go now.
    pub address: String,
    pub context: String,
    /// The client-side objects the group file names, and how to switch each.
    pub clients: Vec<ClientSwitch>,
    /// Milliseconds each step of this run took (fence, catch_up, promote).
    pub took_ms: std::collections::BTreeMap<&'static str, u128>,
}

pub async fn run(
    global: &GlobalArgs,
    printer: &Printer,
    args: DrFailoverArgs,
) -> Result<(), Failure> {
    let group = Group::open(global, &args.group).await?;
    let report = execute(&group, global.yes, printer, &args).await?;
    printer.value(&report, render).map_err(Failure::failed)
}

fn render(r: &FailoverReport) -> String {
    let mut text = format!(
        "Failed over to {} at epoch {}{}; {} is fenced ({}).{}\n\
         Every pod of {} reads with its stored credentials: {}.\n\
         Clients must switch to {} (context {}).\n",
        r.to,
        r.epoch,
        if r.resumed { " (resumed)" } else { "" },
        r.from,
        match r.fence {
            FenceKind::Sealed => "every pod sealed, marked demoted",
            FenceKind::Recorded => "unreachable: the fence is recorded in the DR state; it stays sealed when it returns",
        },
        r.caught_up
            .as_ref()
            .map_or_else(String::new, |s| format!(" Caught up with {s}.")),
        r.to,
        r.pods.join(", "),
        r.address,
        r.context
    );
    for c in &r.clients {
        text.push_str(&format!(
            "Point the {c} at it ({} = {}):\n  {}\n",
            c.field, c.value, c.command
        ));
    }
    text
}

/// Runs (or resumes) a failover of `group`; `yes` confirms it.
pub async fn execute(
    group: &Group,
    yes: bool,
    printer: &Printer,
    args: &DrFailoverArgs,
) -> Result<FailoverReport, Failure> {
    let seen = group.load_state().await?;
    let holder = holder_identity();
    let (progress, resumed) = match &seen.state.failover {
        Some(f) if f.holder != holder && !holder_gone(&f.holder) => {
            return Err(Failure::refused(anyhow!(
                "a failover to {} at epoch {} is in progress, run by {}; nothing was changed. If that run is gone for good, re-run this command from its host",
                f.to, f.epoch, f.holder
            )))
        }
        Some(f) => {
            if args.to != "auto" && args.to != f.to {
                return Err(Failure::refused(anyhow!(
                    "the interrupted failover at epoch {} promotes {}; re-run with --to {} (or auto) to finish it; nothing was changed",
                    f.epoch, f.to, f.to
                )));
            }
            tracing::info!(to = %f.to, epoch = f.epoch, step = ?f.step, "resuming an interrupted failover");
            (f.clone(), true)
        }
        None => {
            if let Some(e) = args.expect_epoch.filter(|e| *e != seen.state.epoch) {
                return Err(Failure::refused(anyhow!(
                    "the DR state is at epoch {}, not {e}: {} is primary now; nothing was changed",
                    seen.state.epoch, seen.state.primary
                )));
            }
            let view = gather(group, printer, &args.group).await?;
            let decision = decide(&view, &args.to)?;
            let to = decision.chosen.clone();
            if !confirm(yes, &format!(
                "Fail over DR group {} from {} to {} at epoch {}? {} is sealed and marked demoted",
                group.config.name, seen.state.primary, to, seen.state.epoch + 1, seen.state.primary
            ))? {
                return Err(Failure::refused(anyhow!("the failover was not confirmed; nothing was changed")));
            }
            tracing::info!(decision = %serde_json::to_string(&decision).unwrap_or_default(), "failover decision");
            let taken = take_epoch(&group.state, &seen, &to, &holder, decision)
                .await
                .map_err(|e| match e {
                    TakeEpochError::Lost(lost) => Failure::refused(lost),
                    TakeEpochError::State(e) => Failure::failed(e),
                })?;
            fail::fail_point!("dr::failover_after_epoch");
            let progress = taken.state.failover.clone().ok_or_else(|| {
                Failure::failed(anyhow!("the DR state lost the failover it just took"))
            })?;
            (progress, false)
        }
    };
    finish(group, printer, args, &progress, resumed).await
}

fn confirm(yes: bool, question: &str) -> Result<bool, Failure> {
    if yes {
        return Ok(true);
    }
    Err(Failure::refused(anyhow!(
        "{question} needs confirmation; re-run with --yes"
    )))
}

/// Step 1: whom to promote, with the scores.
pub fn decide(view: &GroupView, to: &str) -> Result<Decision, Failure> {
    let standbys: Vec<_> = view
        .clusters
        .iter()
        .filter(|c| c.role == "standby")
        .collect();
    let scores: Vec<ScoreRecord> = standbys
        .iter()
        .map(|c| ScoreRecord {
            name: c.name.clone(),
            score: c.score.unwrap_or(0),
            ineligible: c.ineligible.clone(),
        })
        .collect();
    let describe = || {
        scores
            .iter()
            .map(|s| match &s.ineligible {
                Some(why) => format!("{}: {why}", s.name),
                None => format!("{}: score {}", s.name, s.score),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let chosen = if to == "auto" {
        if let Some(p) = view
            .clusters
            .iter()
            .find(|c| c.name == view.primary && c.figures.health == Some(200))
        {
            return Err(Failure::refused(anyhow!(
                "primary {} is healthy at epoch {} (active leader {}); nothing to fail over. For a planned switch name the standby with --to NAME",
                p.name,
                view.epoch,
                p.figures.leader.as_deref().unwrap_or("?")
            )));
        }
        let candidates: Vec<_> = standbys
            .iter()
            .map(|c| (c.name.as_str(), &c.figures))
            .collect();
        choose(&candidates).map(str::to_owned).ok_or_else(|| {
            Failure::refused(anyhow!(
                "no standby is healthy ({}); nothing was changed. `kubectl vault dr status --config FILE` shows why",
                describe()
            ))
        })?
    } else {
        if to == view.primary {
            return Err(Failure::refused(anyhow!(
                "{to} is already the primary at epoch {}; nothing was changed",
                view.epoch
            )));
        }
        let Some(c) = standbys.iter().find(|c| c.name == to) else {
            return Err(Failure::refused(anyhow!(
                "{to} is not a standby of DR group {} (standbys: {}); nothing was changed",
                view.group,
                standbys
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if let Some(why) = &c.ineligible {
            return Err(Failure::refused(anyhow!(
                "standby {to} cannot be promoted: {why}; nothing was changed"
            )));
        }
        to.to_owned()
    };
    Ok(Decision {
        at: now_rfc3339(),
        epoch: view.epoch + 1,
        from: view.primary.clone(),
        chosen,
        by: if to == "auto" {
            "auto".into()
        } else {
            format!("--to {to}")
        },
        scores,
    })
}

/// Steps 3 to 5, from where `progress` stands.
async fn finish(
    group: &Group,
    printer: &Printer,
    args: &DrFailoverArgs,
    progress: &FailoverProgress,
    resumed: bool,
) -> Result<FailoverReport, Failure> {
    let epoch = progress.epoch;
    let step = progress.step;
    let mut took_ms = std::collections::BTreeMap::new();
    let mut fence_kind = FenceKind::Recorded;
    if step < FailoverStep::Fenced {
        let started = std::time::Instant::now();
        fence_kind = fence(group, printer, args, progress).await?;
        took_ms.insert("fence", started.elapsed().as_millis());
        let kind = fence_kind;
        let from = progress.from.clone();
        advance(&group.state, epoch, Some(FailoverStep::Fenced), move |s| {
            s.fences.insert(
                from.clone(),
                Fence {
                    epoch,
                    how: kind,
                    at: now_rfc3339(),
                },
            );
        })
        .await
        .map_err(Failure::failed)?;
        fail::fail_point!("dr::failover_after_fence");
    } else if let Some(v) = group.peek_state().await? {
        if let Some(f) = v.state.fences.get(&progress.from) {
            fence_kind = f.how;
        }
    }
    let target = group.member(&progress.to)?;
    let mut caught_up = None;
    if step < FailoverStep::CaughtUp {
        let started = std::time::Instant::now();
        caught_up = catch_up(group, printer, args, progress).await?;
        took_ms.insert("catch_up", started.elapsed().as_millis());
        advance(&group.state, epoch, Some(FailoverStep::CaughtUp), |_| {})
            .await
            .map_err(Failure::failed)?;
        fail::fail_point!("dr::failover_after_catch_up");
    }
    let promoting = std::time::Instant::now();
    let cluster = target.cluster(printer).await?;
    let ctx = target.ctx(printer);
    let store = ctx.store(&cluster, None);
    let credentials = stored(&store).await?;
    let timeouts = crate::cmd::snapshot::timeouts(args.restore.timeout);
    reconcile(&cluster, &Keyring::of(&credentials), &timeouts)
        .await
        .map_err(|e| {
            Failure::failed(anyhow::Error::new(e).context(format!(
                "could not unseal {} with its stored credentials; re-run `kubectl vault dr failover --config {}` to resume",
                progress.to, group.file
            )))
        })?;
    let mut pods = Vec::new();
    for node in cluster.nodes().await.map_err(Failure::failed)? {
        let reads = crate::ops::wait::poll_until(
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                token_works(&node, &credentials.root_token)
                    .await
                    .then_some(())
            },
        )
        .await;
        if reads.is_none() {
            return Err(Failure::failed(anyhow!(
                "pod {} of {} does not read with the stored token after unsealing; re-run `kubectl vault dr failover --config {}` to resume",
                crate::ops::node::VaultNode::name(&node), progress.to, group.file
            )));
        }
        pods.push(crate::ops::node::VaultNode::name(&node).to_owned());
    }
    target
        .mark(
            &target.secret_name(&cluster),
            &group.mark("primary", epoch, &progress.to),
        )
        .await?;
    took_ms.insert("promote", promoting.elapsed().as_millis());
    fail::fail_point!("dr::failover_after_promote");
    let to = progress.to.clone();
    advance(&group.state, epoch, None, move |s| {
        s.fences.remove(&to);
        s.standbys.remove(&to);
    })
    .await
    .map_err(Failure::failed)?;
    let new_address = address(
        target.spec.address.as_deref(),
        cluster.listener_tls(),
        &cluster.workload_name(),
        &target.namespace,
    );
    Ok(FailoverReport {
        epoch,
        from: progress.from.clone(),
        to: progress.to.clone(),
        fence: fence_kind,
        caught_up,
        resumed,
        pods,
        clients: switches(&group.config.clients, &new_address),
        address: new_address,
        context: target.spec.context.clone(),
        took_ms,
    })
}

/// Step 3: seal the old primary where it answers, else record the fence.
/// How long the old primary's API gets to answer before it counts as unreachable.
fn reach_timeout(args: &DrFailoverArgs) -> Duration {
    args.group.probe_timeout * 3
}

async fn fence(
    group: &Group,
    printer: &Printer,
    args: &DrFailoverArgs,
    progress: &FailoverProgress,
) -> Result<FenceKind, Failure> {
    let old = group.member(&progress.from)?;
    let reach = tokio::time::timeout(reach_timeout(args), old.cluster(printer)).await;
    let cluster = match reach {
        Ok(Ok(c)) => c,
        Ok(Err(f)) => {
            tracing::warn!(cluster = %progress.from, error = %format!("{:#}", f.error), "the old primary is unreachable; recording its fence");
            return Ok(FenceKind::Recorded);
        }
        Err(_) => {
            tracing::warn!(cluster = %progress.from, "the old primary does not answer; recording its fence");
            return Ok(FenceKind::Recorded);
        }
    };
    let ctx = old.ctx(printer);
    let store = ctx.store(&cluster, None);
    let credentials = match stored(&store).await {
        Ok(c) => c,
        Err(f) => {
            tracing::warn!(cluster = %progress.from, error = %format!("{:#}", f.error), "the old primary's credentials cannot be read; recording its fence");
            return Ok(FenceKind::Recorded);
        }
    };
    let report = seal_all(&cluster, &credentials.root_token)
        .await
        .map_err(|e| {
            Failure::failed(anyhow::Error::new(e).context(format!(
                "could not seal the old primary {}; re-run `kubectl vault dr failover --config {}` to resume",
                progress.from, group.file
            )))
        })?;
    let kind = if report.sealed.is_empty() && report.already.is_empty() {
        FenceKind::Recorded
    } else {
        FenceKind::Sealed
    };
    old.mark(
        &old.secret_name(&cluster),
        &group.mark(DEMOTED, progress.epoch, &progress.to),
    )
    .await?;
    tracing::info!(cluster = %progress.from, sealed = ?report.sealed, already = ?report.already, "fenced");
    Ok(kind)
}

/// Step 4: restore a newer snapshot of the data into the chosen standby.
async fn catch_up(
    group: &Group,
    printer: &Printer,
    args: &DrFailoverArgs,
    progress: &FailoverProgress,
) -> Result<Option<String>, Failure> {
    let target = group.member(&progress.to)?;
    let cluster = target.cluster(printer).await?;
    let store = target.ctx(printer).store(&cluster, None);
    let credentials = stored(&store).await?;
    let newest = group
        .location
        .newest_verified(Some(&credentials.cluster_id))
        .await;
    let Ok((name, manifest)) = newest else {
        tracing::warn!(cluster = %progress.to, "no verified snapshot of its data at the location; promoting what it holds");
        return Ok(None);
    };
    let held = group
        .peek_state()
        .await?
        .and_then(|v| v.state.standbys.get(&progress.to).cloned());
    // A standby that lost every pod's data since it was chosen (or whose
    // recover from such a loss was interrupted) holds nothing: it takes the
    // newest snapshot even when that is the one it had.
    let checkpoint = store.load_checkpoint().await.ok().flatten();
    let timeouts = crate::cmd::snapshot::timeouts(args.restore.timeout);
    let lost = pending_snapshot(checkpoint.as_ref()).is_some()
        || matches!(nothing_initialized(&cluster, &timeouts).await, Ok(true));
    let behind = lost
        || held.as_ref().is_none_or(|h| {
            h.snapshot != name
                && (h.raft_index, &h.snapshot_time)
                    < (manifest.raft_committed_index, &manifest.created_at)
        });
    if !behind {
        return Ok(None);
    }
    tracing::info!(cluster = %progress.to, snapshot = %name, lost, "catching up with a newer snapshot");
    sync_standby(
        group,
        printer,
        target,
        &Source {
            primary: progress.from.clone(),
            epoch: progress.epoch,
            credentials: None,
            recipients: vec![],
            name: name.clone(),
            manifest,
        },
        false,
        &args.restore,
    )
    .await?;
    Ok(Some(name))
}
