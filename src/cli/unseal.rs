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
