//! `kubectl vault status` arguments.

use clap::Args;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Name of the credentials Secret (default: <statefulset>-unseal).
    #[arg(long)]
    pub secret_name: Option<String>,
}
