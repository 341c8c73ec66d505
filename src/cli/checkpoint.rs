//! `kubectl vault checkpoint show|abandon` arguments.

use crate::cli::StoreArgs;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Show the interrupted operation: its phase, who wrote it, what key
    /// material it holds (never the keys) and the command that resumes it.
    Show(CheckpointArgs),
    /// Delete a checkpoint whose operation can never finish. Refuses while it
    /// holds the only copy of keys the cluster may need. Asks first (--yes).
    Abandon(CheckpointArgs),
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}
