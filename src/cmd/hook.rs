//! `kubectl-vault hook`: the Helm post-install/post-upgrade hook Job.
//!
//! Runs `init` (which resumes, or joins and unseals an initialized cluster)
//! without prompts until every replica is up or `--timeout` passes, and
//! records each outcome as a Kubernetes Event on the StatefulSet. Refusals
//! (data loss, lost credentials, missing permissions) end at once with exit
//! 1: retrying cannot fix them, and Helm must see the failure.

use super::events::record as event;
use crate::cli::init::InitArgs;
use crate::cmd::{Context, Exit, Failure};
use crate::ops::cluster::ClusterError;
use crate::ops::init::InitError;
use crate::transport::discover::list_pods;
use std::time::{Duration, Instant};

pub async fn run(ctx: &Context<'_>, args: InitArgs) -> Result<(), Failure> {
    let mut global = ctx.global.clone();
    global.yes = true;
    global.non_interactive = true;
    let hook_ctx = Context {
        client: ctx.client.clone(),
        namespace: ctx.namespace.clone(),
        global: &global,
        printer: ctx.printer,
    };
    let deadline = Instant::now() + args.timeout;
    wait_for_pods(&hook_ctx, deadline).await?;
    // A pending migrate's phase 2 is what this upgrade applied the raft
    // values for: finish it before anything else looks at the pods.
    if let Err(failure) = super::migrate::finish_pending(&hook_ctx, &args.store, args.timeout).await
    {
        let workload = hook_ctx.cluster().await.ok().map(|c| c.workload_name());
        event(
            ctx,
            workload.as_deref(),
            "Warning",
            "VaultHookFailed",
            &failure.error.to_string(),
        )
        .await;
        return Err(failure);
    }
    // A primary that a DR failover demoted stays sealed.
    if let Ok(cluster) = hook_ctx.cluster().await {
        crate::cmd::dr::guard::check(&hook_ctx, &cluster, args.store.secret_name.as_deref())
            .await?;
    }
    let mut backoff = Duration::from_secs(2);
    let mut attempt = 1u32;
    loop {
        let workload = hook_ctx.cluster().await.ok().map(|c| c.workload_name());
        let result = super::init::run(&hook_ctx, rerun_args(&args, deadline)).await;
        match result {
            Ok(()) => {
                event(
                    ctx,
                    workload.as_deref(),
                    "Normal",
                    "VaultReady",
                    "every replica is initialized, joined and unsealed",
                )
                .await;
                return Ok(());
            }
            Err(failure) if failure.exit == Exit::Failed && Instant::now() + backoff < deadline => {
                tracing::warn!(attempt, error = %failure.error, "hook attempt failed; retrying");
                event(
                    ctx,
                    workload.as_deref(),
                    "Warning",
                    "VaultRetrying",
                    &format!("attempt {attempt} failed: {}", failure.error),
                )
                .await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
            Err(failure) => {
                let failure = unseal_for_other_operation(&hook_ctx, &args, failure).await;
                event(
                    ctx,
                    workload.as_deref(),
                    "Warning",
                    "VaultHookFailed",
                    &failure.error.to_string(),
                )
                .await;
                return Err(failure);
            }
        }
    }
}

/// A checkpoint of another operation (an interrupted rotate, restore or
/// recover) is not the hook's to finish or delete. Pods an upgrade restarted
/// still come up: they are unsealed with every candidate generation, the
/// pending one first. The hook then fails, naming the command that finishes
/// the operation, so that Helm shows it.
async fn unseal_for_other_operation(
    ctx: &Context<'_>,
    args: &InitArgs,
    failure: Failure,
) -> Failure {
    let Some(InitError::OtherOperation(other)) = failure.error.downcast_ref::<InitError>() else {
        return failure;
    };
    let resume = other.resume.clone();
    let Ok(cluster) = ctx.cluster().await else {
        return failure;
    };
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    match super::unseal::unseal_pods(ctx, &cluster, &store, args.store.lock_timeout).await {
        Ok(lines) => {
            for line in &lines {
                tracing::info!("{line}");
            }
            Failure::refused(anyhow::anyhow!(
                "{}; an unseal pass with the stored and pending keys gave: {}. Run `{resume}` to finish it, then re-run the upgrade",
                failure.error,
                lines.join(", ")
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e.error, "could not unseal with the pending keys");
            failure
        }
    }
}

/// The same arguments with the timeout cut to what is left of the deadline.
fn rerun_args(args: &InitArgs, deadline: Instant) -> InitArgs {
    InitArgs {
        key_shares: args.key_shares,
        key_threshold: args.key_threshold,
        recovery_shares: args.recovery_shares,
        recovery_threshold: args.recovery_threshold,
        store: args.store.clone(),
        show_keys: false,
        reveal_keys_noninteractive: false,
        rescue_dir: args.rescue_dir.clone(),
        timeout: deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5)),
    }
}

/// Waits, until `deadline`, for the workload's pods to be there. An upgrade
/// that replaces them (a storage change, a new replica count) can leave the
/// StatefulSet with none for a moment when the hook starts: that is a wait,
/// not a refusal. Only the pods are listed (no probe): the attempts that
/// follow discover the workload themselves.
async fn wait_for_pods(ctx: &Context<'_>, deadline: Instant) -> Result<(), Failure> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.namespace);
    loop {
        let found = list_pods(&pods, &ctx.global.selector)
            .await
            .map_err(Failure::refused)?;
        if !found.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::refused(ClusterError::NoPods {
                selector: ctx.global.selector.clone(),
                namespace: ctx.namespace.clone(),
            }));
        }
        tracing::info!("no server pods yet; waiting for the StatefulSet to create them");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
