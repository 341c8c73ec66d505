//! `kubectl vault rotate`: confirm, take the lock, find the active node and
//! run (or resume) the rotate state machine.

use crate::cli::rotate::RotateArgs;
use crate::cmd::{holder_identity, Context, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::node::VaultNode;
use crate::ops::reconcile::wait_for_leader;
use crate::ops::rotate::RotateOptions;
use crate::ops::store::{CredentialStore, RetryBudget};
use std::time::Duration;

pub async fn run(ctx: &Context<'_>, args: RotateArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let checkpoint = store.load_checkpoint().await.map_err(Failure::refused)?;
    let resuming = match crate::ops::operation::claim(
        checkpoint.as_ref(),
        crate::ops::operation::Operation::Rotate,
    ) {
        crate::ops::operation::Claim::Busy(found) => {
            return Err(Failure::refused(
                crate::ops::operation::OtherOperation::new(store.checkpoint_object(), found),
            ))
        }
        crate::ops::operation::Claim::Resume(_) => true,
        crate::ops::operation::Claim::Free => false,
    };
    let what = if args.only_root_token {
        "Rotate the root token"
    } else if args.recovery {
        "Rotate the recovery keys"
    } else {
        "Rekey the unseal shares"
    };
    if !resuming
        && !ctx.confirm(&format!(
            "{what} of {}/{}?",
            ctx.namespace,
            cluster.workload_name()
        ))?
    {
        return Err(Failure::refused(anyhow::anyhow!(
            "rotate was not confirmed; nothing was changed"
        )));
    }
    let holder = holder_identity();
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let result = guard
        .fenced(rotate(ctx, &cluster, &store, &args, holder))
        .await
        .map_err(Failure::failed)?;
    let outcome = result?;
    ctx.printer
        .value(&outcome, |o| {
            let mut text = String::new();
            if o.resumed {
                text.push_str("Finished an interrupted rotate.\n");
            }
            if o.rekeyed {
                let keys = if o.api.contains("recovery") { "Recovery keys rotated" } else { "Unseal shares rekeyed" };
                text.push_str(&format!("{keys}: generation {} is current (via {}); the previous generation is kept in the history.\n", o.generation, o.api));
            }
            if o.root_token_rotated {
                text.push_str("Root token rotated; the old one is revoked.\n");
            }
            text.push_str(&format!("Credentials are stored in {}.\n", store.credentials_object()));
            text
        })
        .map_err(Failure::failed)
}

async fn rotate(
    ctx: &Context<'_>,
    cluster: &crate::transport::discover::KubeCluster,
    store: &impl CredentialStore,
    args: &RotateArgs,
    holder: String,
) -> Result<crate::ops::rotate::RotateOutcome, Failure> {
    let _ = ctx;
    let nodes = cluster.nodes().await.map_err(Failure::refused)?;
    // A cluster that is not whole cannot be rotated: say what comes first,
    // without waiting for a leader that cannot appear.
    let observed = crate::ops::status::observe(&nodes).await;
    // A store that cannot be read (tampered recipients, a foreign envelope)
    // says why itself; it is not "no credentials".
    let credentials = store.load_credentials().await.map_err(Failure::refused)?;
    let stored = crate::cmd::next::Stored {
        credentials: credentials.is_some(),
        resume: None,
    };
    if let Some(next) = crate::cmd::next::next_step(&observed, stored) {
        return Err(Failure::refused(anyhow::anyhow!(
            "the cluster is not ready to rotate; {next}"
        )));
    }
    let Ok((leader_name, _)) = wait_for_leader(&nodes, Duration::from_secs(30)).await else {
        return Err(Failure::refused(anyhow::anyhow!(
            "no pod is the active leader, so there is nothing to rotate; check `kubectl vault status`"
        )));
    };
    let leader = nodes
        .iter()
        .find(|n| n.name() == leader_name)
        .ok_or_else(|| Failure::failed(anyhow::anyhow!("the leader {leader_name} vanished")))?;
    let opts = RotateOptions {
        key_shares: args.key_shares,
        key_threshold: args.key_threshold,
        rekey: !args.only_root_token,
        recovery: args.recovery,
        root_token: args.root_token || args.only_root_token,
        keep_generations: usize::from(args.keep_generations),
        holder,
        budget: RetryBudget::default(),
    };
    crate::ops::rotate::run(leader, &nodes, store, &opts)
        .await
        .map_err(|e| match e {
            e if e.is_refusal() => Failure::refused(e),
            other => Failure::failed(
                anyhow::Error::new(other)
                    .context("rotate did not finish; re-run `kubectl vault rotate` to resume"),
            ),
        })
}
