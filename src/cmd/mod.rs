//! One file per subcommand: resolve arguments into settings, wire the
//! Kubernetes parts to the operations, report the outcome.
//!
//! Owns the exit-code contract and everything interactive (confirmations).

pub mod api_error;
pub mod checkpoint;
pub mod credentials;
pub mod dr;
pub mod events;
pub mod hook;
pub mod init;
pub mod migrate;
pub mod next;
pub mod recover;
pub mod rotate;
pub mod snapshot;
pub mod status;
pub mod unseal;
mod unseal_metrics;

use crate::cli::{Cli, Command, EnvelopeArgs, GlobalArgs};
use crate::output::Printer;
use crate::store::envelope::{Envelope, IdentitySources, Sealing};
use crate::store::kube_secret::{default_secret_name, SecretStore};
use crate::transport::discover::{KubeCluster, Probe};
use std::io::IsTerminal;

/// The exit codes scripts can rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Success = 0,
    /// Refused: a guard, bad input or a missing permission; nothing was changed.
    Refused = 1,
    /// Failed unexpectedly; re-running is safe.
    Failed = 2,
    /// The cluster was initialized but the keys are only in a local rescue file.
    KeysOnlyLocal = 3,
}

/// A command that did not succeed, with the code to exit with.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn refused(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            exit: Exit::Refused,
            error: error.into(),
        }
    }

    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            exit: Exit::Failed,
            error: error.into(),
        }
    }
}

/// Everything a command needs to reach the cluster.
pub struct Context<'a> {
    pub client: kube::Client,
    pub namespace: String,
    pub global: &'a GlobalArgs,
    pub printer: &'a Printer,
}

impl Context<'_> {
    /// The workload, probed by exec: for commands that run things in the
    /// container, so a missing grant stops them before anything changes.
    pub async fn cluster(&self) -> Result<KubeCluster, Failure> {
        self.discover(Probe::Always).await
    }

    /// The workload, for commands that only call the API (`status`,
    /// `unseal`): no exec where the pod spec tells what the probe would.
    pub async fn api_cluster(&self) -> Result<KubeCluster, Failure> {
        self.discover(Probe::UnlessTheSpecAnswers).await
    }

    async fn discover(&self, probe: Probe) -> Result<KubeCluster, Failure> {
        KubeCluster::discover(
            self.client.clone(),
            &self.namespace,
            Some(&self.global.selector),
            probe,
        )
        .await
        .and_then(|c| c.use_transport(self.global.transport))
        .map_err(Failure::refused)
    }

    pub fn store(&self, cluster: &KubeCluster, secret_name: Option<&str>) -> SecretStore {
        let name = secret_name.map_or_else(
            || default_secret_name(&cluster.workload_name()),
            str::to_owned,
        );
        SecretStore::new(self.client.clone(), &self.namespace, &name).with_envelope(self.envelope())
    }

    /// The envelope the global encryption flags ask for: encrypt for
    /// `--age-recipient` (or inherit what is stored), open with
    /// `--age-identity`, `--age-identity-secret` and the sops environment.
    pub fn envelope(&self) -> Envelope {
        let args = &self.global.envelope;
        let sealing = if args.age_recipients.is_empty() {
            Sealing::Inherit
        } else if args.recipients_from_env {
            Sealing::InheritOr(args.age_recipients.clone())
        } else {
            Sealing::Encrypt(args.age_recipients.clone())
        };
        let secret = args
            .age_identity_secret
            .as_deref()
            .map(|s| match s.split_once('/') {
                Some((namespace, name)) => (namespace.to_owned(), name.to_owned()),
                None => (self.namespace.clone(), s.to_owned()),
            });
        let sources = IdentitySources {
            files: args.age_identities.clone(),
            secret,
        };
        Envelope::new(sealing, sources, Some(self.client.clone()))
            .allow_recipients_change(self.global.yes)
    }

    /// Takes the workload's Lease lock, waiting up to `timeout` for another run.
    pub async fn lock(
        &self,
        cluster: &KubeCluster,
        timeout: std::time::Duration,
    ) -> Result<crate::store::lease::LeaseGuard, Failure> {
        self.lease(cluster)
            .acquire(timeout)
            .await
            .map_err(Failure::refused)
    }

    /// The workload's Lease lock, for a caller that tries it repeatedly.
    pub fn lease(&self, cluster: &KubeCluster) -> crate::store::lease::LeaseLock {
        crate::store::lease::LeaseLock::new(
            self.client.clone(),
            &self.namespace,
            &cluster.workload_name(),
            &holder_identity(),
            crate::store::lease::LEASE_DURATION,
        )
    }

    /// Asks a person at a terminal; --yes does not answer it. Without a
    /// terminal (or with --non-interactive) it is refused.
    pub fn ask_on_terminal(&self, question: &str) -> Result<bool, Failure> {
        self.ask(
            question,
            "needs a person at a terminal to confirm; nothing was printed (add --reveal-keys-noninteractive to print without one)",
        )
    }

    /// A person can be asked: stdin and stderr are terminals, and
    /// --non-interactive is off.
    pub fn has_terminal(&self) -> bool {
        !self.global.non_interactive
            && std::io::stdin().is_terminal()
            && std::io::stderr().is_terminal()
    }

    /// Asks before a destructive step. `--yes` answers for automation; without
    /// a terminal (or with --non-interactive) the answer is no.
    pub fn confirm(&self, question: &str) -> Result<bool, Failure> {
        if self.global.yes {
            return Ok(true);
        }
        self.ask(
            question,
            "needs confirmation; re-run with --yes to confirm without a prompt",
        )
    }

    fn ask(&self, question: &str, without_terminal: &str) -> Result<bool, Failure> {
        if !self.has_terminal() {
            return Err(Failure::refused(anyhow::anyhow!(
                "{question} {without_terminal}"
            )));
        }
        crate::output::log::suspend(|| {
            dialoguer::Confirm::new()
                .with_prompt(question)
                .default(false)
                .interact()
        })
        .map_err(Failure::failed)
    }
}

/// Who is running, for Lease holders and checkpoints.
pub fn holder_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("kubectl-vault@{host}/{}", std::process::id())
}

/// Runs the parsed command line.
pub async fn run(cli: Cli, printer: &Printer) -> Result<(), Failure> {
    match cli.command {
        Command::Version => {
            printer.line(&format!("kubectl-vault {}", env!("CARGO_PKG_VERSION")));
            Ok(())
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "kubectl-vault", &mut std::io::stdout());
            Ok(())
        }
        Command::Snapshot(command) if snapshot::is_offline(&command) => {
            snapshot::run_offline(printer, command).await
        }
        Command::Dr(command) => {
            let mut global = cli.global;
            recipients_from_env(&mut global.envelope)?;
            dr::run(global, printer, command).await
        }
        command => {
            let mut global = cli.global;
            recipients_from_env(&mut global.envelope)?;
            let (client, namespace, connection) = connect(&global).await?;
            let ctx = Context {
                client,
                namespace,
                global: &global,
                printer,
            };
            let result = match events::operation(&command) {
                Some(operation) => events::recorded(&ctx, operation, dispatch(&ctx, command)).await,
                None => dispatch(&ctx, command).await,
            };
            match result {
                Err(failure) => Err(api_error::explain(&ctx, &connection, failure).await),
                ok => ok,
            }
        }
    }
}

/// Runs one command that talks to the cluster.
async fn dispatch(ctx: &Context<'_>, command: Command) -> Result<(), Failure> {
    match command {
        Command::Status(args) => status::run(ctx, args).await,
        Command::Init(args) => init::run(ctx, args).await,
        Command::Unseal(args) => unseal::run_unseal(ctx, args).await,
        Command::Join(args) => unseal::run_join(ctx, args).await,
        Command::Credentials(command) => credentials::run(ctx, command).await,
        Command::Hook(args) => hook::run(ctx, args).await,
        Command::Rotate(args) => rotate::run(ctx, args).await,
        Command::Snapshot(command) => snapshot::run(ctx, command).await,
        Command::Recover(args) => recover::run(ctx, args).await,
        Command::Migrate(args) => migrate::run(ctx, args).await,
        Command::Checkpoint(command) => checkpoint::run(ctx, command).await,
        Command::Version | Command::Completion { .. } | Command::Dr(_) => Ok(()),
    }
}

/// Without `--age-recipient`, the recipients in `SOPS_AGE_RECIPIENTS`
/// (comma-separated, as sops reads it; empty entries skipped).
fn recipients_from_env(envelope: &mut EnvelopeArgs) -> Result<(), Failure> {
    if !envelope.age_recipients.is_empty() {
        return Ok(());
    }
    let Ok(value) = std::env::var("SOPS_AGE_RECIPIENTS") else {
        return Ok(());
    };
    envelope.recipients_from_env = true;
    envelope.age_recipients = crate::store::envelope::parse_recipients(&value).map_err(|e| {
        Failure::refused(anyhow::anyhow!(
            "SOPS_AGE_RECIPIENTS holds an invalid recipient: {e}; set it to age1... keys separated by commas, or unset it"
        ))
    })?;
    Ok(())
}

/// Builds a client from --kubeconfig/--context, $KUBECONFIG, ~/.kube/config
/// or in-cluster, and says where it connects, for messages.
pub(crate) async fn connect(
    global: &GlobalArgs,
) -> Result<(kube::Client, String, api_error::Connection), Failure> {
    let options = kube::config::KubeConfigOptions {
        context: global.context.clone(),
        ..Default::default()
    };
    let connection = connection(global)?;
    let config = match &global.kubeconfig {
        Some(path) => match kube::config::Kubeconfig::read_from(path) {
            Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("could not read {}: {e}", path.display())),
        },
        None if global.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| e.to_string()),
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| {
        Failure::refused(anyhow::anyhow!(
            "could not load a Kubernetes configuration: {e}; pass --kubeconfig or set KUBECONFIG"
        ))
    })?;
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let connection = api_error::Connection {
        server: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
        ..connection
    };
    let client = kube::Client::try_from(config).map_err(Failure::failed)?;
    Ok((client, namespace, connection))
}

/// The kubeconfig's file, context and user for this run, without the
/// server (known once the configuration is built). Refuses a --context
/// that the kubeconfig does not have, naming the ones it has.
fn connection(global: &GlobalArgs) -> Result<api_error::Connection, Failure> {
    let (kubeconfig, file) = match &global.kubeconfig {
        Some(path) => (
            kube::config::Kubeconfig::read_from(path).ok(),
            path.display().to_string(),
        ),
        None => (
            kube::config::Kubeconfig::read().ok(),
            std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".to_owned()),
        ),
    };
    let Some(kubeconfig) = kubeconfig else {
        return Ok(api_error::Connection {
            kubeconfig: file,
            context: global.context.clone(),
            ..Default::default()
        });
    };
    let context = global
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone());
    let named = |name: &str| kubeconfig.contexts.iter().find(|c| c.name == name);
    if let Some(wanted) = &global.context {
        if named(wanted).is_none() {
            let known: Vec<&str> = kubeconfig
                .contexts
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(Failure::refused(anyhow::anyhow!(
                "context {wanted} is not in {file}; pass --context with one of: {}",
                if known.is_empty() {
                    "(none)".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    let user = context
        .as_deref()
        .and_then(named)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone());
    Ok(api_error::Connection {
        server: String::new(),
        kubeconfig: file,
        context,
        user,
    })
}
