//! `kubectl vault status` arguments.

use clap::Args;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Name of the credentials Secret (default: <statefulset>-unseal).
    #[arg(long)]
    pub secret_name: Option<String>,
    /// Keep showing the status as pods change (redrawn in place on a
    /// terminal), until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// How often --watch reads the status.
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_duration)]
    pub interval: std::time::Duration,
}
