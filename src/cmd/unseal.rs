//! `kubectl vault unseal` and `kubectl vault join`.
//!
//! Unseal works on every sealed, initialized pod at once, each pod directly,
//! with the stored shares; `--watch` repeats that until interrupted. Join
//! takes the lock and runs the full reconcile (join, unseal, check peers).

use crate::cli::unseal::{JoinArgs, UnsealArgs};
use crate::cmd::{Context, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, VaultNode};
use crate::ops::reconcile::{reconcile, wait_for_leader, Timeouts};
use crate::ops::store::CredentialStore;
use crate::ops::unseal::{unseal_with_any, KeySet, UnsealOutcome};
use crate::output::table;
use crate::transport::discover::KubeCluster;
use std::time::Duration;

#[derive(Debug, serde::Serialize)]
struct PodUnseal {
    pod: String,
    result: String,
    /// The key generation the pod accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u32>,
    error: Option<String>,
}

impl PodUnseal {
    fn new(pod: &str, result: &str, error: Option<String>) -> Self {
        PodUnseal {
            pod: pod.to_owned(),
            result: result.to_owned(),
            generation: None,
            error,
        }
    }
}

/// Every generation that may unseal the pods, in the order to try them: an
/// interrupted rotate's new shares first, then the stored current shares,
/// then the history.
pub(crate) struct Generations {
    pub current: Credentials,
    candidates: Vec<(u32, Vec<crate::ops::secret::Secret>, usize)>,
}

impl Generations {
    fn key_sets(&self) -> Vec<KeySet<'_>> {
        self.candidates
            .iter()
            .map(|(generation, shares, threshold)| KeySet {
                generation: *generation,
                shares,
                threshold: *threshold,
            })
            .collect()
    }
}

async fn generations(store: &impl CredentialStore) -> Result<Generations, Failure> {
    let stored = store.load_credentials().await.map_err(Failure::refused)?;
    let checkpoint = store.load_checkpoint().await.map_err(Failure::refused)?;
    let mut list: Vec<Credentials> = checkpoint
        .as_ref()
        .map(|c| c.candidate_credentials().into_iter().cloned().collect())
        .unwrap_or_default();
    if let Some(c) = &stored {
        list.push(c.clone());
    }
    let Some(current) = stored.clone().or_else(|| list.first().cloned()) else {
        return Err(Failure::refused(anyhow::anyhow!(
            "no credentials in {}; run `kubectl vault init`, or `kubectl vault credentials import` if you hold them elsewhere",
            store.credentials_object()
        )));
    };
    if stored.is_none() {
        tracing::warn!(
            "using the keys of an interrupted operation from {}; run `{}` to finish it",
            store.checkpoint_object(),
            checkpoint
                .as_ref()
                .map_or("kubectl vault init", |c| c.resume_command())
        );
    }
    let mut candidates = Vec::new();
    for c in &list {
        if !candidates.iter().any(|(g, _, _)| *g == c.generation) {
            candidates.push((
                c.generation,
                c.unseal_shares().to_vec(),
                usize::from(c.key_threshold),
            ));
        }
    }
    for h in &current.history {
        if !candidates.iter().any(|(g, _, _)| *g == h.generation) {
            let n = usize::from(h.key_threshold).min(h.unseal_keys_b64.len());
            candidates.push((
                h.generation,
                h.unseal_keys_b64[..n].to_vec(),
                usize::from(h.key_threshold),
            ));
        }
    }
    Ok(Generations {
        current,
        candidates,
    })
}

/// One pass over every pod; returns the per-pod results and whether any failed.
async fn unseal_pass(
    cluster: &KubeCluster,
    generations: &Generations,
) -> Result<(Vec<PodUnseal>, bool), Failure> {
    let nodes = cluster.nodes().await.map_err(Failure::refused)?;
    fail::fail_point!("unseal::after_listing_pods");
    let sets = generations.key_sets();
    let sets = &sets;
    let results = futures::future::join_all(nodes.iter().map(|node| async move {
        let status = match seal_status(node).await {
            Ok(s) => s,
            Err(e) => return PodUnseal::new(node.name(), "unreachable", Some(e.to_string())),
        };
        if !status.initialized {
            return PodUnseal::new(
                node.name(),
                "not initialized",
                Some("run `kubectl vault join`".into()),
            );
        }
        match unseal_with_any(node, sets).await {
            Ok((UnsealOutcome::AlreadyUnsealed, _)) => {
                PodUnseal::new(node.name(), "already unsealed", None)
            }
            Ok((UnsealOutcome::Unsealed { shares_submitted }, generation)) => {
                tracing::info!(
                    pod = node.name(),
                    shares_submitted,
                    generation = generation.unwrap_or_default(),
                    "unsealed"
                );
                PodUnseal {
                    generation,
                    ..PodUnseal::new(node.name(), "unsealed", None)
                }
            }
            Err(e) => PodUnseal::new(node.name(), "failed", Some(e.to_string())),
        }
    }))
    .await;
    let failed = results.iter().any(|r| r.error.is_some());
    Ok((results, failed))
}

pub async fn run_unseal(ctx: &Context<'_>, args: UnsealArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let generations = generations(&store).await?;
    if args.watch {
        return watch(&cluster, &generations, args.interval).await;
    }
    let (results, failed) = unseal_pass(&cluster, &generations).await?;
    ctx.printer
        .value(&results, |rows| {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.pod.clone(),
                        r.result.clone(),
                        r.generation
                            .map_or_else(|| "-".to_owned(), |g| g.to_string()),
                        r.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            table(&["POD", "RESULT", "GENERATION", "DETAIL"], &rows)
        })
        .map_err(Failure::failed)?;
    if !failed && !args.timeout.is_zero() {
        let nodes = cluster.nodes().await.map_err(Failure::refused)?;
        let (leader, _) = wait_for_leader(&nodes, args.timeout)
            .await
            .map_err(Failure::failed)?;
        tracing::info!(pod = %leader, "active leader");
    }
    if failed {
        let first = results
            .iter()
            .find_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.pod)))
            .unwrap_or_default();
        return Err(Failure::refused(anyhow::anyhow!(
            "not every pod could be unsealed: {first}"
        )));
    }
    Ok(())
}

/// Unseals pods as they restart, until Ctrl-C.
async fn watch(
    cluster: &KubeCluster,
    generations: &Generations,
    interval: Duration,
) -> Result<(), Failure> {
    tracing::info!(interval = ?interval, "watching for sealed pods; Ctrl-C to stop");
    loop {
        match unseal_pass(cluster, generations).await {
            Ok((results, _)) => {
                for r in results.iter().filter(|r| r.error.is_some()) {
                    tracing::warn!(pod = %r.pod, "{}: {}", r.result, r.error.clone().unwrap_or_default());
                }
            }
            Err(f) => tracing::warn!(error = %f.error, "unseal pass failed"),
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

pub async fn run_join(ctx: &Context<'_>, args: JoinArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let credentials = generations(&store).await?.current;
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let timeouts = Timeouts {
        leader: args.timeout,
        pod_appear: args.timeout,
        peers: args.timeout,
    };
    let result = reconcile(&cluster, &credentials, &timeouts).await;
    guard.release().await;
    let report = result.map_err(|e| {
        Failure::failed(
            anyhow::Error::new(e).context("join did not finish; re-run `kubectl vault join`"),
        )
    })?;
    ctx.printer
        .value(&report, |r| {
            let rows: Vec<Vec<String>> = r
                .pods
                .iter()
                .map(|p| {
                    vec![
                        p.pod.clone(),
                        p.joined.to_string(),
                        format!("{:?}", p.unseal),
                    ]
                })
                .collect();
            table(&["POD", "JOINED", "UNSEAL"], &rows)
        })
        .map_err(Failure::failed)
}
