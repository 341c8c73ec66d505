//! `kubectl vault init`: confirm, take the lock, run the init state machine,
//! and report where the credentials are (never the keys, unless asked).

use crate::cli::init::InitArgs;
use crate::cmd::{holder_identity, Context, Exit, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::init::{InitError, InitOptions, InitOutcome};
use crate::ops::reconcile::{ReconcileReport, Timeouts};
use crate::ops::status::observe;
use crate::ops::store::{CredentialStore, RetryBudget};
use crate::store::local_file::save_rescue_copy;

pub async fn run(ctx: &Context<'_>, args: InitArgs) -> Result<(), Failure> {
    if args.key_threshold == 0 || args.key_threshold > args.key_shares {
        return Err(Failure::refused(anyhow::anyhow!(
            "--key-threshold {} must be between 1 and --key-shares {}",
            args.key_threshold,
            args.key_shares
        )));
    }
    let (recovery_shares, recovery_threshold) = recovery_shape(ctx, &args)?;
    if args.show_keys && !args.reveal_keys_noninteractive && !ctx.has_terminal() {
        return Err(Failure::refused(anyhow::anyhow!(
            "--show-keys prints the keys only after asking a person at a terminal, and there is none; nothing was changed. Add --reveal-keys-noninteractive to print them anyway, or leave --show-keys out and read them later with `kubectl vault credentials show --reveal`"
        )));
    }
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    if cluster.replicas() > 1 {
        let nodes = cluster.nodes().await.map_err(Failure::refused)?;
        let fresh = observe(&nodes)
            .await
            .iter()
            .all(|o| o.seal.as_ref().is_some_and(|s| !s.initialized));
        if fresh
            && !ctx.confirm(&format!(
                "Initialize {}/{} ({} pods) with {} key shares and threshold {}?",
                ctx.namespace,
                cluster.workload_name(),
                cluster.replicas(),
                args.key_shares,
                args.key_threshold
            ))?
        {
            return Err(Failure::refused(anyhow::anyhow!(
                "init was not confirmed; nothing was changed"
            )));
        }
    }
    let holder = holder_identity();
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let opts = InitOptions {
        key_shares: args.key_shares,
        key_threshold: args.key_threshold,
        recovery_shares,
        recovery_threshold,
        holder,
        budget: RetryBudget::default(),
        timeouts: Timeouts {
            leader: args.timeout,
            pod_appear: args.timeout,
            peers: args.timeout,
        },
    };
    let result = guard
        .fenced(crate::ops::init::run(&cluster, &store, &opts))
        .await
        .map_err(Failure::failed)?;
    match result {
        Ok(outcome) => {
            let reveal = args.show_keys
                && (args.reveal_keys_noninteractive
                    || ctx
                        .ask_on_terminal("Print the unseal keys and root token to this terminal?")
                        .unwrap_or(false));
            report(ctx, &store, outcome, reveal).await
        }
        Err(InitError::StoreUnwritable {
            object,
            source,
            credentials,
        }) => {
            let saved = if ctx.global.non_interactive {
                None
            } else {
                save_rescue_copy(&args.rescue_dir, &cluster.workload_name(), &credentials).ok()
            };
            let where_ = match saved {
                Some(path) => format!("the keys were written to {} (mode 0600); move them somewhere safe and run `kubectl vault credentials import`", path.display()),
                None => "a copy of the init response stays on the initialized pod's data volume; re-run `kubectl vault init` once the store is writable to store it".to_owned(),
            };
            Err(Failure { exit: Exit::KeysOnlyLocal, error: anyhow::anyhow!("the cluster was initialized but {object} could not be written: {source}; {where_}") })
        }
        Err(e) if e.is_refusal() => Err(Failure::refused(e)),
        Err(e) => Err(Failure::failed(anyhow::Error::new(e).context(
            "init did not finish; re-run `kubectl vault init` to resume",
        ))),
    }
}

/// `--recovery-shares`/`--recovery-threshold`, checked: 0 shares (no recovery
/// keys at all) only with --yes, and with a warning.
fn recovery_shape(ctx: &Context<'_>, args: &InitArgs) -> Result<(u8, u8), Failure> {
    if args.recovery_shares == 0 {
        if !ctx.global.yes {
            return Err(Failure::refused(anyhow::anyhow!(
                "--recovery-shares 0 initializes an auto-unseal cluster without recovery keys: a root token generation and recovery mode then need `kubectl vault rotate --recovery` first; re-run with --yes to do that anyway; nothing was changed"
            )));
        }
        tracing::warn!("--recovery-shares 0: an auto-unseal cluster gets no recovery keys; root token generation and recovery mode need `kubectl vault rotate --recovery` first");
        return Ok((0, 0));
    }
    if args.recovery_threshold == 0 || args.recovery_threshold > args.recovery_shares {
        return Err(Failure::refused(anyhow::anyhow!(
            "--recovery-threshold {} must be between 1 and --recovery-shares {}",
            args.recovery_threshold,
            args.recovery_shares
        )));
    }
    Ok((args.recovery_shares, args.recovery_threshold))
}

async fn report(
    ctx: &Context<'_>,
    store: &impl CredentialStore,
    outcome: InitOutcome,
    show_keys: bool,
) -> Result<(), Failure> {
    let (verb, report) = match &outcome {
        InitOutcome::Initialized { report } => ("initialized:", report),
        InitOutcome::Resumed { report } => ("finished an interrupted init:", report),
        InitOutcome::AlreadyInitialized { report } => ("was already initialized:", report),
    };
    ctx.printer
        .value(&outcome, |_| {
            summary(verb, report, &store.credentials_object())
        })
        .map_err(Failure::failed)?;
    if show_keys {
        let credentials = store.load_credentials().await.map_err(Failure::failed)?;
        if let Some(c) = credentials {
            for (i, share) in c.unseal_keys_b64.iter().enumerate() {
                ctx.printer
                    .line(&format!("Unseal key {}: {}", i + 1, share.expose()));
            }
            for (i, key) in c.recovery_keys_b64.iter().enumerate() {
                ctx.printer
                    .line(&format!("Recovery key {}: {}", i + 1, key.expose()));
            }
            ctx.printer
                .line(&format!("Root token: {}", c.root_token.expose()));
        }
    }
    Ok(())
}

fn summary(verb: &str, report: &ReconcileReport, object: &str) -> String {
    let unsealed = report.pods.len();
    let joined = report.pods.iter().filter(|p| p.joined).count();
    let active = if report.standalone {
        format!("standalone server {} (not HA)", report.leader)
    } else {
        format!("leader {} ({})", report.leader, report.leader_address)
    };
    format!(
        "Cluster {verb} {unsealed} pods unsealed, {joined} joined, {active}.\nCredentials are stored in {object}; show them with `kubectl vault credentials show`.\n"
    )
}
