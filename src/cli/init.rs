//! `kubectl vault init` arguments.

use crate::cli::StoreArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Number of unseal key shares.
    #[arg(long, default_value_t = 5)]
    pub key_shares: u8,
    /// Shares needed to unseal.
    #[arg(long, default_value_t = 3)]
    pub key_threshold: u8,
    /// Number of recovery keys on an auto-unseal cluster (the pods name a
    /// seal provider). 0 leaves the cluster without any (OpenBao's default
    /// since 2.4) and needs --yes: root token generation and recovery mode
    /// then need `kubectl vault rotate --recovery` first.
    #[arg(long, default_value_t = 5)]
    pub recovery_shares: u8,
    /// Recovery keys needed to authorise a root token generation or a rotation.
    #[arg(long, default_value_t = 3)]
    pub recovery_threshold: u8,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the keys and root token after init. Asks on a terminal even
    /// with --yes; without one it needs --reveal-keys-noninteractive.
    #[arg(long)]
    pub show_keys: bool,
    /// With --show-keys: print them without a terminal to ask on (for a
    /// pipeline that stores them elsewhere; they end up in its logs).
    #[arg(long, requires = "show_keys")]
    pub reveal_keys_noninteractive: bool,
    /// Where to write the keys if the Secret store stays unwritable after init.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub rescue_dir: std::path::PathBuf,
    /// Give up on pods that do not appear or elect a leader within this time.
    #[arg(long, default_value = "120s", value_parser = crate::cli::parse_duration)]
    pub timeout: std::time::Duration,
}
