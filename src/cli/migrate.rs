//! `kubectl vault migrate` arguments.

use crate::cli::StoreArgs;
use clap::{Args, ValueEnum};

/// The storage a migrate moves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetStorage {
    /// Integrated storage (raft), one voter per pod.
    Raft,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The storage to move to.
    #[arg(long, value_enum, required_unless_present = "rollback")]
    pub to: Option<TargetStorage>,
    /// Where the verified backup of the file data goes before anything
    /// changes: a file, a folder (ending in /) or a bucket prefix, as
    /// `snapshot save --to`. Needed for phase 1.
    #[arg(long, value_name = "LOCATION")]
    pub backup_to: Option<String>,
    /// Raft voters to end with: odd, at least 3 (1 for a one-node raft step).
    #[arg(long, default_value_t = 3)]
    pub replicas: u8,
    /// After phase 1, wait up to this long for the raft values to be applied,
    /// then finish (phase 2) in the same run.
    #[arg(long, value_parser = crate::cli::parse_duration)]
    pub wait: Option<std::time::Duration>,
    /// Abandon a migrate that has not finished phase 2: the file data is
    /// untouched; with the standalone values applied again, checks that the
    /// pod unseals on it and deletes the checkpoint.
    #[arg(long, conflicts_with_all = ["backup_to", "wait"])]
    pub rollback: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Give up on pods that do not appear, elect a leader, join or unseal within this time.
    #[arg(long, default_value = "120s", value_parser = crate::cli::parse_duration)]
    pub timeout: std::time::Duration,
}
