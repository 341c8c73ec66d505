//! `kubectl vault snapshot save|list|verify|restore` arguments.

use crate::cli::StoreArgs;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a raft snapshot from the active node to a file, folder or bucket,
    /// with a JSON manifest; then apply retention.
    Save(SaveArgs),
    /// List the snapshots at a location with their verification status.
    List(ListArgs),
    /// Re-hash a snapshot and compare it with its manifest; with
    /// --restore-test, also restore it into a throwaway server and unseal it.
    Verify(VerifyArgs),
    /// Verify a snapshot, restore it into the running cluster and unseal it
    /// with the key generation its manifest names.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write: ./file.snap, ./dir/, file:///dir/, s3://bucket/prefix/,
    /// gs://bucket/prefix/ or az://container/prefix/ (credentials from the
    /// providers' usual variables: AWS_*, GOOGLE_APPLICATION_CREDENTIALS,
    /// AZURE_STORAGE_*; see the README).
    #[arg(long, value_name = "TARGET")]
    pub to: String,
    /// After a successful save, keep only the N newest snapshots at the target
    /// (never deleting the newest verified one).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// After a successful save, delete snapshots older than this (e.g. 30d is
    /// written 720h; never the newest verified one).
    #[arg(long, value_parser = crate::cli::parse_duration)]
    pub max_age: Option<std::time::Duration>,
    /// After the save, push its outcome to this Prometheus Pushgateway
    /// (job kubectl_vault_snapshot): the last attempt, and on success the
    /// last success's time and size.
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    #[command(flatten)]
    pub restore_test: RestoreTestArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `--restore-test` and its settings, for `save` and `verify`.
#[derive(Clone, Debug, Args)]
pub struct RestoreTestArgs {
    /// Restore the snapshot into a throwaway server started in one of the
    /// workload's pods (loopback only, storage in a temporary folder on the
    /// data volume), unseal it with the key generation its manifest names
    /// (or, on an auto-unseal cluster, through the live server's seal) and
    /// check that a stored root token is valid in it; the result is
    /// recorded in the manifest. The live cluster is never touched.
    #[arg(long)]
    pub restore_test: bool,
    /// With --restore-test: a path that must be readable, with a stored
    /// root token of that generation, in the restored data (e.g. kv/sentinel).
    #[arg(long, value_name = "PATH", requires = "restore_test")]
    pub sentinel: Option<String>,
    /// With --restore-test: give up after this long; the throwaway server's
    /// watchdog kills it shortly after, whatever happens to this run.
    #[arg(long, default_value = "10m", value_parser = crate::cli::parse_duration)]
    pub restore_test_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// A folder, bucket prefix or snapshot file.
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// Re-hash every snapshot instead of checking sizes against manifests.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A snapshot file, or a folder/bucket prefix (with --snapshot, or the newest).
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// The snapshot's name within a folder or bucket.
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub restore_test: RestoreTestArgs,
    /// With --restore-test: push its result to this Prometheus Pushgateway
    /// (job kubectl_vault_snapshot).
    #[arg(long, value_name = "URL", requires = "restore_test")]
    pub pushgateway: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A snapshot file, or a folder/bucket prefix (with --snapshot, or the newest verified).
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// The snapshot's name within a folder or bucket.
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// Credentials of the cluster the snapshot came from (a `credentials
    /// export` file), for a snapshot of another cluster. Once they unseal the
    /// restored data they become the stored credentials.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<std::path::PathBuf>,
    /// Without --snapshot, also consider snapshots whose manifest names
    /// another cluster than the stored credentials.
    #[arg(long)]
    pub allow_foreign_cluster: bool,
    /// On an auto-unseal cluster, restore a snapshot of another cluster:
    /// you assert that both use the same seal key (the same static key, the
    /// same transit key); the plugin cannot compare keys, and data wrapped by
    /// another key never unseals here.
    #[arg(long)]
    pub same_seal_key: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Give up on pods that do not elect a leader or unseal within this time.
    #[arg(long, default_value = "120s", value_parser = crate::cli::parse_duration)]
    pub timeout: std::time::Duration,
    /// Give up on a snapshot stream into the pod that has not finished by then.
    #[arg(long, default_value = "30m", value_parser = crate::cli::parse_duration)]
    pub stream_timeout: std::time::Duration,
}
