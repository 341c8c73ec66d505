//! `kubectl vault unseal` and `kubectl vault join` arguments.

use crate::cli::StoreArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct UnsealArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Keep unsealing pods that restart, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch looks for sealed pods.
    #[arg(long, default_value = "5s", value_parser = crate::cli::parse_duration)]
    pub interval: std::time::Duration,
    /// With --watch: serve Prometheus metrics at http://ADDR/metrics
    /// (e.g. 0.0.0.0:9102): pods sealed/initialized/leader/voter, unseal
    /// attempts and failures, the stored key generation, a waiting checkpoint.
    #[arg(long, value_name = "ADDR", requires = "watch")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How long to wait for pods being replaced (deleted, Terminating, Pending)
    /// and then for an active leader (0s: one pass over the running pods, no waiting).
    #[arg(long, default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Give up on pods that do not appear or elect a leader within this time.
    #[arg(long, default_value = "120s", value_parser = crate::cli::parse_duration)]
    pub timeout: std::time::Duration,
}
