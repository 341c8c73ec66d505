//! `kubectl vault rotate` arguments.

use crate::cli::StoreArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// New number of unseal key shares (default: keep the current count).
    #[arg(long)]
    pub key_shares: Option<u8>,
    /// New threshold (default: keep the current one).
    #[arg(long)]
    pub key_threshold: Option<u8>,
    /// Also rotate the root token after the rekey.
    #[arg(long, conflicts_with = "only_root_token")]
    pub root_token: bool,
    /// Rotate the recovery keys of an auto-unseal cluster (with verification,
    /// checkpointed); creates them when the cluster has none.
    #[arg(long, conflicts_with = "only_root_token")]
    pub recovery: bool,
    /// Rotate only the root token; the unseal shares stay as they are.
    #[arg(long)]
    pub only_root_token: bool,
    /// How many earlier key generations to keep in the credentials history
    /// (restoring an older snapshot needs the shares current when it was taken).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub keep_generations: u16,
    #[command(flatten)]
    pub store: StoreArgs,
}
