//! `kubectl vault dr` arguments: status, sync, failover and watch of a DR
//! group described by `--config`.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum DrCommand {
    /// Every member's role, reachability, health, latency, lag and score.
    Status(DrStatusArgs),
    /// Restore the primary's newest verified snapshot into the standbys.
    Sync(DrSyncArgs),
    /// Promote a standby: take the next epoch, fence the old primary, catch
    /// up, unseal the new primary.
    Failover(DrFailoverArgs),
    /// Probe every member each interval; fail over after repeated failures
    /// of the primary.
    Watch(DrWatchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct DrConfigArgs {
    /// The DRGroup file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Timed API probes per cluster, for p50/p95 latency.
    #[arg(long, default_value_t = 5)]
    pub probes: u32,
    /// How long one probe request may take.
    #[arg(long, default_value = "5s", value_parser = crate::cli::parse_duration)]
    pub probe_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DrStatusArgs {
    #[command(flatten)]
    pub group: DrConfigArgs,
}

#[derive(Debug, Args, Clone)]
pub struct DrRestoreArgs {
    /// Give up on pods that do not appear, elect a leader or unseal within this time.
    #[arg(long, default_value = "120s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,
    /// Give up on a snapshot stream into a pod that has not finished by then.
    #[arg(long, default_value = "30m", value_parser = crate::cli::parse_duration)]
    pub stream_timeout: Duration,
    /// How long to wait for another run holding a cluster's lock.
    #[arg(long, default_value = "120s", value_parser = crate::cli::parse_duration)]
    pub lock_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DrSyncArgs {
    #[command(flatten)]
    pub group: DrConfigArgs,
    /// Only this standby (default: every standby).
    #[arg(long, value_name = "NAME")]
    pub standby: Option<String>,
    /// Leave the standby unsealed after the sync (read-only use; clients
    /// could write to data the next sync overwrites).
    #[arg(long)]
    pub standby_unsealed: bool,
    #[command(flatten)]
    pub restore: DrRestoreArgs,
}

#[derive(Debug, Args)]
pub struct DrFailoverArgs {
    #[command(flatten)]
    pub group: DrConfigArgs,
    /// The standby to promote, or `auto` for the best score.
    #[arg(long, default_value = "auto", value_name = "NAME|auto")]
    pub to: String,
    /// Refuse unless the DR state is still at this epoch (what `dr watch` read).
    #[arg(long, value_name = "EPOCH")]
    pub expect_epoch: Option<u64>,
    #[command(flatten)]
    pub restore: DrRestoreArgs,
}

#[derive(Debug, Args)]
pub struct DrWatchArgs {
    #[command(flatten)]
    pub group: DrConfigArgs,
    /// Time between probes of every member.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub interval: Duration,
    /// Consecutive failed probes of the primary (spanning at least 2
    /// intervals) before a failover.
    #[arg(long, default_value_t = 3)]
    pub failure_threshold: u32,
    /// Serve Prometheus metrics here (`:9102`, `127.0.0.1:9102`).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Stop after this many probe rounds (tests; default: run until stopped).
    #[arg(long, hide = true)]
    pub rounds: Option<u64>,
    #[command(flatten)]
    pub restore: DrRestoreArgs,
}
