//! `kubectl vault credentials` arguments. The age recipients and identities
//! are the global encryption flags (`--age-recipient`, `--age-identity`,
//! `--age-identity-secret`).

use crate::cli::StoreArgs;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Show the stored credentials, redacted: generation, threshold, share and
    /// root-token fingerprints, recipients.
    Show(ShowArgs),
    /// Write the credentials as a Kubernetes Secret manifest, SOPS-encrypted
    /// for the age recipients the way Flux decrypts it.
    Export(ExportArgs),
    /// Store credentials from a (SOPS-encrypted) Secret manifest or credentials
    /// document, after checking them against the live cluster.
    Import(ImportArgs),
    /// Re-write the stored credentials SOPS-encrypted for --age-recipient.
    Encrypt(MigrateArgs),
    /// Re-write the stored credentials as plaintext JSON.
    Decrypt(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the unseal shares and root token themselves (asks for confirmation).
    #[arg(long)]
    pub reveal: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Write the manifest to FILE (created with mode 0600; never overwritten) instead of stdout.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Export without encryption when no recipient is given or recorded.
    #[arg(long)]
    pub plaintext: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The Secret manifest or credentials JSON to import (SOPS-encrypted or
    /// plaintext); `-` reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Replace stored credentials that differ from the imported ones (asks for confirmation).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}
