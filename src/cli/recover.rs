//! `kubectl vault recover` arguments.

use crate::cli::StoreArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Where the snapshots are: a folder, bucket prefix or snapshot file; the
    /// newest one that verifies is restored.
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// Also consider snapshots whose manifest names another cluster than the
    /// stored credentials.
    #[arg(long)]
    pub allow_foreign_cluster: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Give up on pods that do not appear, elect a leader or unseal within this time.
    #[arg(long, default_value = "120s", value_parser = crate::cli::parse_duration)]
    pub timeout: std::time::Duration,
    /// Give up on a snapshot stream into the pod that has not finished by then.
    #[arg(long, default_value = "30m", value_parser = crate::cli::parse_duration)]
    pub stream_timeout: std::time::Duration,
}
