//! Command-line types only: clap structs and value enums, one file per
//! subcommand. Resolving them into settings happens in `cmd`.

pub mod checkpoint;
pub mod credentials;
pub mod dr;
pub mod init;
pub mod migrate;
pub mod recover;
pub mod rotate;
pub mod snapshot;
pub mod status;
pub mod unseal;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-vault",
    bin_name = "kubectl vault",
    version,
    about = "Operate Vault and OpenBao clusters on Kubernetes: init, unseal, join and store keys without ever losing them"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of the Vault/OpenBao pods (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Label selector for the server pods.
    #[arg(short = 'l', long, global = true, default_value = crate::transport::discover::DEFAULT_SELECTOR)]
    pub selector: String,
    /// Output format of read commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// More log detail (-v debug, -vv trace).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Answer yes to every confirmation (for automation).
    #[arg(long, global = true)]
    pub yes: bool,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Never prompt; fail instead where a confirmation is needed and --yes is absent.
    #[arg(long, global = true)]
    pub non_interactive: bool,
    /// How requests reach each pod: direct speaks the Vault API through
    /// pods/portforward (TLS checked with the container's own CA); exec runs
    /// the container's CLI; auto uses direct where the cluster allows it.
    /// `sys/init` always runs in the pod.
    #[arg(long, global = true, value_enum, default_value_t = crate::transport::pod::TransportKind::Auto)]
    pub transport: crate::transport::pod::TransportKind,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
}

/// The SOPS/age envelope of stored credentials: who writes can read, and
/// which keys this run reads with. Global, because every command that touches
/// the credentials Secret needs them.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Encryption (SOPS/age)")]
pub struct EnvelopeArgs {
    /// Encrypt stored credentials and checkpoints for this age recipient
    /// (repeatable). Default: the recipients the stored documents are
    /// encrypted for; for documents not encrypted yet, $SOPS_AGE_RECIPIENTS
    /// (comma-separated); plaintext when none. Changing the recipients of an
    /// encrypted document needs the complete new set here and --yes.
    #[arg(long = "age-recipient", global = true, value_name = "AGE1...", value_delimiter = ',', value_parser = crate::store::sops::Recipient::parse)]
    pub age_recipients: Vec<crate::store::sops::Recipient>,
    /// Decrypt with the age identities in FILE (repeatable), in addition to
    /// SOPS_AGE_KEY, SOPS_AGE_KEY_FILE and ~/.config/sops/age/keys.txt.
    #[arg(long = "age-identity", global = true, value_name = "FILE")]
    pub age_identities: Vec<PathBuf>,
    /// Decrypt with the identities in this Secret's data keys ending in
    /// `.agekey` (as Flux does); default namespace: -n.
    #[arg(long, global = true, value_name = "[NAMESPACE/]NAME")]
    pub age_identity_secret: Option<String>,
    /// The recipients came from $SOPS_AGE_RECIPIENTS, not the command line.
    #[arg(skip)]
    pub recipients_from_env: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every pod's seal, raft and readiness state and the stored credentials' state.
    Status(status::StatusArgs),
    /// Initialize the cluster once, store the keys, unseal and join every pod.
    Init(init::InitArgs),
    /// Unseal every sealed pod with the stored shares.
    Unseal(unseal::UnsealArgs),
    /// Join uninitialized pods to the raft leader, then unseal them.
    Join(unseal::JoinArgs),
    /// Show, export, import, encrypt or decrypt the stored credentials.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Rekey the unseal shares (and optionally the root token), crash-safe.
    Rotate(rotate::RotateArgs),
    /// Run as a Helm post-install/post-upgrade hook: init or resume, join and
    /// unseal until every replica is up or the deadline passes. Never prompts.
    Hook(init::InitArgs),
    /// Save, list, verify and restore raft snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Bring back a cluster whose data was lost while its keys survived:
    /// temporary init, forced restore of the newest verified snapshot, unseal
    /// with the stored keys. Never overwrites them.
    Recover(recover::RecoverArgs),
    /// Move a standalone server on file storage to a raft cluster with the
    /// same keys and data (or grow a one-node raft cluster): phase 1 copies
    /// and prints the values to apply, phase 2 joins and verifies.
    Migrate(migrate::MigrateArgs),
    /// Show or abandon an interrupted operation's checkpoint.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Disaster recovery across clusters: warm standbys kept from the
    /// primary's snapshots, scored, and a failover that fences the old primary.
    #[command(subcommand)]
    Dr(dr::DrCommand),
    /// Print the version.
    Version,
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the credentials live; shared by every command that uses them.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Name of the credentials Secret (default: <statefulset>-unseal).
    #[arg(long)]
    pub secret_name: Option<String>,
    /// How long to wait for another run holding the lock.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
}

/// Parses `90s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 2m or 500ms"))?;
    let secs = |s| std::time::Duration::from_secs(s);
    match unit {
        "" | "s" => Ok(secs(n)),
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "m" => Ok(secs(n * 60)),
        "h" => Ok(secs(n * 3600)),
        _ => Err(format!(
            "`{text}` has an unknown unit `{unit}` (use ms, s, m or h)"
        )),
    }
}
