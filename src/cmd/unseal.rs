//! `kubectl vault unseal` and `kubectl vault join`.
//!
//! Unseal works on every sealed, initialized pod at once, each pod directly,
//! with the stored shares; `--watch` repeats that until interrupted. Join
//! takes the lock and runs the full reconcile (join, unseal, check peers).

use crate::cli::unseal::{JoinArgs, UnsealArgs};
use crate::cmd::{Context, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::keyring::Keyring;
use crate::ops::node::{seal_status, VaultNode};
use crate::ops::reconcile::{reconcile, wait_for_leader, Timeouts};
use crate::ops::store::CredentialStore;
use crate::ops::unseal::{unseal_with_any, KeySet, UnsealOutcome};
use crate::output::table;
use crate::transport::discover::KubeCluster;
use crate::transport::pod::PodNode;
use std::time::Duration;

#[derive(Debug, serde::Serialize)]
struct PodUnseal {
    pod: String,
    result: String,
    /// The key generation the pod accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u32>,
    error: Option<String>,
    /// The pod object this result is about (a successor has another).
    #[serde(skip)]
    uid: String,
}

impl PodUnseal {
    fn new(pod: &str, result: &str, error: Option<String>) -> Self {
        PodUnseal {
            pod: pod.to_owned(),
            result: result.to_owned(),
            generation: None,
            error,
            uid: String::new(),
        }
    }
}

/// Every generation that may unseal the pods, in the order to try them (see
/// [`Keyring`]). A checkpoint that cannot be read does not block unsealing
/// with the stored credentials: it is reported, with the command that shows
/// and clears it.
pub(crate) async fn keyring(store: &impl CredentialStore) -> Result<Keyring, Failure> {
    Ok(keyring_and_checkpoint(store).await?.0)
}

/// [`keyring`] and the checkpoint it was built from (`None` also when it
/// cannot be read), for callers that name the pending operation.
async fn keyring_and_checkpoint(
    store: &impl CredentialStore,
) -> Result<(Keyring, Option<crate::ops::checkpoint::Checkpoint>), Failure> {
    let stored = store.load_credentials().await.map_err(Failure::refused)?;
    let checkpoint = match store.load_checkpoint().await {
        Ok(c) => c,
        Err(e) if stored.is_some() => {
            tracing::warn!(
                checkpoint = %store.checkpoint_object(),
                error = %e,
                "the checkpoint cannot be read; unsealing with the stored credentials only. `kubectl vault checkpoint show` tells what it is, `kubectl vault checkpoint abandon` clears it"
            );
            None
        }
        Err(e) => return Err(Failure::refused(e)),
    };
    let ring = Keyring::from_store(stored.as_ref(), checkpoint.as_ref()).ok_or_else(|| {
        Failure::refused(anyhow::anyhow!(
            "no credentials in {}; run `kubectl vault init`, or `kubectl vault credentials import` if you hold them elsewhere",
            store.credentials_object()
        ))
    })?;
    if let Some(c) = &checkpoint {
        if !c.candidate_credentials().is_empty() {
            tracing::info!(
                checkpoint = %store.checkpoint_object(),
                "offering the keys of an interrupted {} too; `{}` finishes it",
                c.operation(),
                c.resume_command()
            );
        }
    }
    Ok((ring, checkpoint))
}

/// One pass over every pod; returns the per-pod results and whether any failed.
async fn unseal_pass(
    cluster: &KubeCluster,
    keys: &Keyring,
) -> Result<(Vec<PodUnseal>, bool), Failure> {
    let nodes = cluster.nodes().await.map_err(Failure::refused)?;
    fail::fail_point!("unseal::after_listing_pods");
    let sets = keys.key_sets();
    let sets = &sets;
    let results = futures::future::join_all(nodes.iter().map(|node| async move {
        PodUnseal {
            uid: node.uid().to_owned(),
            ..unseal_node(node, sets).await
        }
    }))
    .await;
    let mut results = results;
    // A server that does not answer may be one its seal provider failed at
    // start: say so, since no key submitted here could help it.
    for r in results.iter_mut().filter(|r| r.result == "unreachable") {
        if let Some(f) = super::status::seal_provider_failure(cluster, &r.pod).await {
            r.result = "seal provider failed".to_owned();
            r.error = Some(format!(
                "{f}; no unseal keys apply: bring the provider back and the pod unseals itself"
            ));
        }
    }
    // Keys are stored (the keyring loaded) but no pod holds data: joining
    // would have nothing to join; only a recover brings the data back.
    if !results.is_empty() && results.iter().all(|r| r.result == "not initialized") {
        for r in &mut results {
            r.error = Some(crate::cmd::next::RECOVER.to_owned());
        }
    }
    let failed = results.iter().any(|r| r.error.is_some());
    Ok((results, failed))
}

/// Unseals one pod with the first key set it accepts.
async fn unseal_node(node: &PodNode, sets: &[KeySet<'_>]) -> PodUnseal {
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
        Ok((UnsealOutcome::SelfUnsealed, _)) => {
            let seal = status.seal();
            tracing::info!(pod = node.name(), %seal, "unsealed itself through its seal; nothing submitted");
            PodUnseal::new(node.name(), &format!("unsealed itself ({seal} seal)"), None)
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
}

/// Unseal passes until the pod of every replica has been unsealed.
///
/// # Expected flow
/// A pod being replaced (deleted: Terminating, then Pending, then Running
/// with a new IP) is not there to unseal, or stops answering mid-pass. It is
/// waited for, up to `timeout`, and its successor is unsealed: after a
/// rollout or a node drain every replica ends unsealed, not only the pods
/// that happened to be running when the command started.
///
/// # Guarantees
/// - A pod that answered with a failure (wrong keys, not initialized) is
///   reported at once, never waited for. A running pod that could not be
///   reached (a successor still starting) is tried again until `timeout`.
/// - A replica with no running pod at the deadline is reported "missing".
/// - With `timeout` zero, or pods that no StatefulSet owns, exactly one
///   pass over the pods running now.
async fn unseal_every_replica(
    cluster: &KubeCluster,
    keys: &Keyring,
    timeout: Duration,
) -> Result<(Vec<PodUnseal>, bool), Failure> {
    let deadline = std::time::Instant::now() + timeout;
    // Pods named `<statefulset>-<ordinal>` only when a StatefulSet owns
    // them; without one there is nothing to wait for beyond the pods found.
    let expected: Vec<String> = match cluster.statefulset() {
        Some(sts) => (0..cluster.replicas())
            .map(|o| format!("{sts}-{o}"))
            .collect(),
        None => Vec::new(),
    };
    loop {
        let (mut results, failed) = unseal_pass(cluster, keys).await?;
        if timeout.is_zero() {
            return Ok((results, failed));
        }
        // A result about a pod that is being replaced (Terminating now, or
        // already succeeded by a pod of the same name) says nothing about
        // its successor, which is waited for.
        let running: Vec<(String, String)> = cluster
            .nodes()
            .await
            .map_err(Failure::refused)?
            .iter()
            .map(|n| (n.name().to_owned(), n.uid().to_owned()))
            .collect();
        results.retain(|r| running.contains(&(r.pod.clone(), r.uid.clone())));
        // A running pod that could not be reached (a successor whose server
        // is still starting) is waited for like a missing one; a pod that
        // answered with a failure ends the wait at once.
        let answered_failure = results
            .iter()
            .any(|r| r.error.is_some() && r.result != "unreachable");
        let unreachable = results.iter().any(|r| r.result == "unreachable");
        let failed = failed && results.iter().any(|r| r.error.is_some());
        let missing: Vec<&String> = expected
            .iter()
            .filter(|pod| !results.iter().any(|r| &&r.pod == pod))
            .collect();
        if answered_failure || (missing.is_empty() && !unreachable) {
            return Ok((results, failed));
        }
        if std::time::Instant::now() >= deadline {
            for pod in missing {
                results.push(PodUnseal::new(
                    pod,
                    "missing",
                    Some(format!(
                        "no running pod after {}s; `kubectl get pod {pod}` tells why",
                        timeout.as_secs()
                    )),
                ));
            }
            return Ok((results, true));
        }
        let names: Vec<&str> = missing
            .iter()
            .map(|p| p.as_str())
            .chain(
                results
                    .iter()
                    .filter(|r| r.result == "unreachable")
                    .map(|r| r.pod.as_str()),
            )
            .collect();
        tracing::info!(pods = %names.join(", "), "waiting for pods being replaced");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One unseal pass with every candidate generation, for the hook when it
/// meets another operation's checkpoint; returns `pod: result` lines. Holds
/// the Lease like a watcher pass, so it never resets the unseal progress of
/// a pod another run is unsealing.
pub(crate) async fn unseal_pods(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    store: &impl CredentialStore,
    lock_timeout: Duration,
) -> Result<Vec<String>, Failure> {
    let guard = ctx.lock(cluster, lock_timeout).await?;
    let pass = async {
        let keys = keyring(store).await?;
        unseal_pass(cluster, &keys).await
    };
    let (results, _) = guard.fenced(pass).await.map_err(Failure::failed)??;
    Ok(results
        .iter()
        .map(|r| match (&r.generation, &r.error) {
            (_, Some(e)) => format!("{}: {} ({e})", r.pod, r.result),
            (Some(g), None) => format!("{}: {} with generation {g}", r.pod, r.result),
            (None, None) => format!("{}: {}", r.pod, r.result),
        })
        .collect())
}

pub async fn run_unseal(ctx: &Context<'_>, args: UnsealArgs) -> Result<(), Failure> {
    let cluster = ctx.api_cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    crate::cmd::dr::guard::check(ctx, &cluster, args.store.secret_name.as_deref()).await?;
    if args.watch {
        return watch(ctx, &cluster, &store, args.interval, args.metrics_addr).await;
    }
    let (keys, pending) = keyring_and_checkpoint(&store).await?;
    let (results, failed) = unseal_every_replica(&cluster, &keys, args.timeout).await?;
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
        let hint = pending
            .map(|c| {
                format!(
                    "; an interrupted {} is in {}: `{}` finishes it",
                    c.operation(),
                    store.checkpoint_object(),
                    c.resume_command()
                )
            })
            .unwrap_or_default();
        return Err(Failure::refused(anyhow::anyhow!(
            "not every pod could be unsealed: {first}{hint}"
        )));
    }
    Ok(())
}

/// Unseals pods as they restart, until Ctrl-C.
///
/// Every pass reloads the credentials and the checkpoint, so a rotation or
/// a restore is followed without a restart, and holds the workload's Lease
/// for its duration: a pass never resets the unseal progress of a pod that
/// init, rotate, restore or recover is working on. A pass that finds the
/// Lease held is skipped.
async fn watch(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    store: &impl CredentialStore,
    interval: Duration,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<(), Failure> {
    tracing::info!(interval = ?interval, "watching for sealed pods; Ctrl-C to stop");
    let registry = crate::metrics::Registry::default();
    let _server = match metrics_addr {
        Some(addr) => {
            // Bind now, so that a taken port is an error at start.
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                Failure::refused(anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))
            })?;
            let registry = registry.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(registry, listener).await {
                    tracing::error!(error = %e, "the metrics endpoint stopped");
                }
            }))
        }
        None => None,
    };
    let lease = ctx.lease(cluster);
    // The last result per pod: a pod is reported when its result changes,
    // so a pod that comes back (unsealed by this pass, or by its own seal
    // once the provider is back) is reported once, and a lasting failure
    // does not repeat every pass.
    let mut last: std::collections::HashMap<String, String> = Default::default();
    // One Ctrl-C listener for the whole run: a signal that arrives during a
    // pass is not lost (a fresh listener per sleep would miss it).
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let pass = async {
            match lease.acquire(Duration::ZERO).await {
                Ok(guard) => {
                    let pass = async {
                        let keys = keyring(store).await?;
                        unseal_pass(cluster, &keys).await
                    };
                    match guard.fenced(pass).await {
                        Ok(Ok((results, _))) => {
                            if metrics_addr.is_some() {
                                super::unseal_metrics::record_results(
                                    &registry,
                                    results.iter().map(|r| {
                                        (r.pod.as_str(), r.result.as_str(), r.error.is_some())
                                    }),
                                );
                                super::unseal_metrics::record_state(&registry, cluster, store)
                                    .await;
                            }
                            for r in &results {
                                let before = last.insert(r.pod.clone(), r.result.clone());
                                if before.as_deref() == Some(r.result.as_str()) {
                                    continue;
                                }
                                match (&r.error, before) {
                                    (Some(e), _) => {
                                        tracing::warn!("{}: {}: {e}", r.pod, r.result)
                                    }
                                    (None, Some(was)) => {
                                        tracing::info!("{}: {} (was: {was})", r.pod, r.result)
                                    }
                                    (None, None) if r.result != "already unsealed" => {
                                        tracing::info!("{}: {}", r.pod, r.result)
                                    }
                                    (None, None) => {}
                                }
                            }
                        }
                        Ok(Err(f)) => tracing::warn!(error = %f.error, "unseal pass failed"),
                        Err(lost) => tracing::warn!(error = %lost, "unseal pass stopped"),
                    }
                }
                Err(busy) => {
                    tracing::info!(error = %busy, "skipping this pass: another operation holds the lock")
                }
            }
        };
        let mut pass = std::pin::pin!(pass);
        let stop = tokio::select! {
            _ = &mut interrupted => true,
            () = &mut pass => false,
        };
        if stop {
            // The pass's calls are bounded: let it end, so that its Lease is
            // released and no pod is left with part of a key set.
            pass.await;
            return Ok(());
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

pub async fn run_join(ctx: &Context<'_>, args: JoinArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    // A restore or recover in flight decides which data the pods serve:
    // joining pods now would join them to a cluster about to be replaced.
    if let Ok(Some(c)) = store.load_checkpoint().await {
        use crate::ops::operation::Operation;
        if matches!(c.operation(), Operation::Restore | Operation::Recover) {
            guard.release().await;
            return Err(Failure::refused(
                crate::ops::operation::OtherOperation::new(store.checkpoint_object(), &c),
            ));
        }
    }
    let keys = keyring(&store).await?;
    let timeouts = Timeouts {
        leader: args.timeout,
        pod_appear: args.timeout,
        peers: args.timeout,
    };
    let result = guard
        .fenced(reconcile(&cluster, &keys, &timeouts))
        .await
        .map_err(Failure::failed)?;
    let report = result.map_err(|e| match e {
        crate::ops::reconcile::ReconcileError::NothingInitialized => {
            Failure::refused(anyhow::anyhow!("{}", crate::cmd::next::RECOVER))
        }
        e => Failure::failed(
            anyhow::Error::new(e).context("join did not finish; re-run `kubectl vault join`"),
        ),
    })?;
    ctx.printer
        .value(&report, |r| {
            let rows: Vec<Vec<String>> = r
                .pods
                .iter()
                .map(|p| vec![p.pod.clone(), p.joined.to_string(), p.unseal.to_string()])
                .collect();
            table(&["POD", "JOINED", "UNSEAL"], &rows)
        })
        .map_err(Failure::failed)
}
