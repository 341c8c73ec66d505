//! `kubectl vault dr watch`: the monitoring loop of a DR group.
//!
//! Owns when a failover starts: every interval it probes every member
//! (`dr status`'s figures and scores), exports them as metrics, and logs
//! each round's decision as one JSON line. It fails over only after
//! `--failure-threshold` consecutive failed probes of the primary that span
//! at least two intervals, and only while the DR state is still at the
//! epoch it read when the failures began (`--expect-epoch` of the
//! failover): a primary promoted meanwhile by someone else is left alone.
//! The failover itself is `dr failover --to auto`'s.

use crate::cli::dr::{DrFailoverArgs, DrWatchArgs};
use crate::cli::GlobalArgs;
use crate::cmd::dr::status::{gather, GroupView};
use crate::cmd::dr::{failover, Group};
use crate::cmd::Failure;
use crate::metrics::Registry;
use crate::output::Printer;
use anyhow::anyhow;
use std::time::{Duration, Instant};

const UP: &str = "kubectl_vault_dr_cluster_up";
const HEALTHY: &str = "kubectl_vault_dr_cluster_healthy";
const SCORE: &str = "kubectl_vault_dr_score";
const LAG: &str = "kubectl_vault_dr_lag_seconds";
const CPU: &str = "kubectl_vault_dr_pod_cpu_millicores";
const MEMORY: &str = "kubectl_vault_dr_pod_memory_bytes";
const EPOCH: &str = "kubectl_vault_dr_epoch";
const PRIMARY: &str = "kubectl_vault_dr_primary";
const FAILURES: &str = "kubectl_vault_dr_primary_failed_probes";
const FAILOVERS: &str = "kubectl_vault_dr_failovers_total";

/// The primary's probe failed: unreachable, or no active leader answers.
pub fn primary_failed(view: &GroupView) -> bool {
    !view
        .clusters
        .iter()
        .any(|c| c.name == view.primary && c.reachable && c.figures.health == Some(200))
}

/// A run of failed probes of the primary.
#[derive(Debug)]
pub struct Streak {
    pub failures: u32,
    pub since: Instant,
    /// The epoch when the first failure was seen.
    pub epoch: u64,
}

impl Streak {
    /// True when the streak may trigger a failover: at least `threshold`
    /// failures, spanning at least two intervals.
    pub fn ripe(&self, threshold: u32, interval: Duration, now: Instant) -> bool {
        self.failures >= threshold.max(1) && now.duration_since(self.since) >= interval * 2
    }
}

pub async fn run(global: &GlobalArgs, printer: &Printer, args: DrWatchArgs) -> Result<(), Failure> {
    let group = Group::open(global, &args.group).await?;
    let registry = Registry::default();
    let _server = match &args.metrics_addr {
        Some(addr) => {
            let addr = if addr.starts_with(':') {
                format!("0.0.0.0{addr}")
            } else {
                addr.clone()
            };
            let listener = std::net::TcpListener::bind(&addr)
                .map_err(|e| Failure::refused(anyhow!("cannot serve metrics on {addr}: {e}")))?;
            let registry = registry.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(registry, listener).await {
                    tracing::error!(error = %e, "the metrics endpoint stopped");
                }
            }))
        }
        None => None,
    };
    registry.set(FAILOVERS, "Failovers this watcher ran.", &[], 0.0);
    let mut streak: Option<Streak> = None;
    let mut round = 0u64;
    loop {
        round += 1;
        match gather(&group, printer, &args.group).await {
            Ok(view) => {
                export(&registry, &view);
                let now = Instant::now();
                if primary_failed(&view) {
                    let s = streak.get_or_insert(Streak {
                        failures: 0,
                        since: now,
                        epoch: view.epoch,
                    });
                    s.failures += 1;
                } else {
                    streak = None;
                }
                let failures = streak.as_ref().map_or(0, |s| s.failures);
                registry.set(
                    FAILURES,
                    "Consecutive failed probes of the primary.",
                    &[],
                    f64::from(failures),
                );
                let ripe = streak
                    .as_ref()
                    .is_some_and(|s| s.ripe(args.failure_threshold, args.interval, now));
                let scores: Vec<_> = view
                    .clusters
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "role": c.role, "reachable": c.reachable, "health": c.figures.health, "score": c.score, "ineligible": c.ineligible}))
                    .collect();
                tracing::info!(
                    decision = %serde_json::json!({
                        "primary": view.primary, "epoch": view.epoch,
                        "primary_failed_probes": failures, "failover": ripe, "clusters": scores,
                    }),
                    "dr watch round"
                );
                if let (true, Some(s)) = (ripe, &streak) {
                    tracing::info!(
                        detected_after_ms = s.since.elapsed().as_millis() as u64,
                        failures = s.failures,
                        "the primary failed; failing over"
                    );
                    let fargs = DrFailoverArgs {
                        group: args.group.clone(),
                        to: "auto".into(),
                        expect_epoch: Some(s.epoch),
                        restore: args.restore.clone(),
                    };
                    match failover::execute(&group, true, printer, &fargs).await {
                        Ok(report) => {
                            registry.inc(FAILOVERS, "Failovers this watcher ran.", &[]);
                            tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "failover done");
                        }
                        Err(f) => {
                            tracing::error!(error = %format!("{:#}", f.error), "failover refused or failed; watching on");
                        }
                    }
                    streak = None;
                }
            }
            Err(f) => tracing::warn!(error = %format!("{:#}", f.error), "probe round failed"),
        }
        if args.rounds.is_some_and(|r| round >= r) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn export(registry: &Registry, view: &GroupView) {
    registry.set(EPOCH, "The DR state's epoch.", &[], view.epoch as f64);
    for c in &view.clusters {
        let l = [("cluster", c.name.as_str()), ("role", c.role.as_str())];
        let named = [("cluster", c.name.as_str())];
        registry.set(
            UP,
            "1 when the cluster's API and a server answer.",
            &named,
            if c.reachable { 1.0 } else { 0.0 },
        );
        registry.set(
            HEALTHY,
            "1 when the cluster can serve (primary: an active leader) or be promoted (standby: score above 0).",
            &named,
            match c.score {
                Some(s) => f64::from(u8::from(s > 0)),
                None => f64::from(u8::from(c.figures.health == Some(200))),
            },
        );
        registry.set(
            PRIMARY,
            "1 for the primary.",
            &l,
            f64::from(u8::from(c.name == view.primary)),
        );
        if let Some(s) = c.score {
            registry.set(
                SCORE,
                "The standby's score (0: cannot be chosen).",
                &named,
                s as f64,
            );
        }
        if let Some(lag) = &c.figures.lag {
            registry.set(
                LAG,
                "Seconds the standby's snapshot is behind the primary's newest.",
                &named,
                lag.rpo_seconds as f64,
            );
        }
        if let Some(cpu) = c.figures.cpu_millicores {
            registry.set(
                CPU,
                "CPU of the cluster's pods from metrics.k8s.io, summed (absent where not served).",
                &named,
                cpu,
            );
        }
        if let Some(bytes) = c.figures.memory_bytes {
            registry.set(
                MEMORY,
                "Resident memory of the cluster's pods from metrics.k8s.io, summed (absent where not served).",
                &named,
                bytes as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_ripe_after_the_threshold_and_two_intervals() {
        let start = Instant::now();
        let i = Duration::from_secs(10);
        let s = Streak {
            failures: 3,
            since: start,
            epoch: 1,
        };
        assert!(
            !s.ripe(3, i, start + Duration::from_secs(19)),
            "3 probes within 2 intervals"
        );
        assert!(s.ripe(3, i, start + Duration::from_secs(20)));
        assert!(
            !s.ripe(4, i, start + Duration::from_secs(60)),
            "below the threshold"
        );
    }
}
