//! Unsealing: submitting a threshold of shares to one node, and to many at once.
//!
//! Owns the rules: unseal each node directly, reset stale progress first, and
//! treat a share the server refuses as a stop with the pod named. Which shares
//! to use (the current generation or an older one) is the caller's choice.

use crate::ops::node::{reset_unseal, seal_status, submit_unseal_share, NodeError, VaultNode};
use crate::ops::secret::Secret;
use crate::ops::wait::poll_until;
use std::time::Duration;

/// What happened to one node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsealOutcome {
    AlreadyUnsealed,
    Unsealed {
        shares_submitted: usize,
    },
    /// An auto-unseal pod that was sealed unsealed itself through its seal
    /// provider while we waited; nothing was submitted.
    SelfUnsealed,
}

impl std::fmt::Display for UnsealOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnsealOutcome::AlreadyUnsealed => f.write_str("already unsealed"),
            UnsealOutcome::Unsealed { shares_submitted } => {
                write!(f, "unsealed with {shares_submitted} shares")
            }
            UnsealOutcome::SelfUnsealed => f.write_str("unsealed itself through its seal"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    #[error(
        "pod {pod} is not initialized; it must join the cluster first (run `kubectl vault join`)"
    )]
    NotInitialized { pod: String },
    #[error("pod {pod} rejected the unseal shares: {reason}; the stored credentials may not belong to this cluster (check `kubectl vault credentials show` and `kubectl vault status`)")]
    Rejected { pod: String, reason: String },
    #[error("pod {pod} needs {needed} shares but only {have} are stored")]
    NotEnoughShares {
        pod: String,
        needed: usize,
        have: usize,
    },
    #[error("pod {pod} is still sealed after {submitted} shares (progress {progress})")]
    StillSealed {
        pod: String,
        submitted: usize,
        progress: u32,
    },
    #[error("could not unseal pod {pod}: {source}")]
    Node { pod: String, source: NodeError },
    #[error("pod {pod} unseals itself through its {seal} seal, and it is still sealed after {waited:?}: the seal provider is unreachable or refusing. Nothing was submitted (auto-unseal clusters take no unseal shares); check the provider and `kubectl logs {pod}`")]
    SealProvider {
        pod: String,
        seal: String,
        waited: Duration,
    },
}

/// How long an auto-unseal pod gets to unseal itself (a pod that just
/// started or joined needs a few seconds).
pub const SELF_UNSEAL_WAIT: Duration = Duration::from_secs(30);

/// Waits for an auto-unseal pod to unseal itself; never submits anything.
async fn wait_for_self_unseal(
    node: &impl VaultNode,
    seal: &str,
    waited: Duration,
) -> Result<UnsealOutcome, UnsealError> {
    tracing::info!(
        pod = node.name(),
        seal,
        "sealed; waiting for it to unseal itself through its seal"
    );
    let unsealed = poll_until(waited, Duration::from_millis(250), || async {
        seal_status(node).await.ok().filter(|s| !s.sealed)
    })
    .await;
    match unsealed {
        Some(_) => Ok(UnsealOutcome::SelfUnsealed),
        None => Err(UnsealError::SealProvider {
            pod: node.name().to_owned(),
            seal: seal.to_owned(),
            waited,
        }),
    }
}

/// Unseals `node` with `shares`.
///
/// # Expected flow
/// Read the seal status; if sealed, reset any partial progress, then submit
/// shares one at a time until the node reports unsealed.
///
/// # Guarantees
/// A node that is already unsealed is left alone. A refused share stops the
/// attempt and leaves the node's progress reset. An auto-unseal node is never
/// sent anything: it is given [`SELF_UNSEAL_WAIT`] to unseal itself.
pub async fn unseal_node(
    node: &impl VaultNode,
    shares: &[Secret],
    threshold: usize,
) -> Result<UnsealOutcome, UnsealError> {
    let pod = node.name().to_owned();
    let node_err = |source| UnsealError::Node {
        pod: pod.clone(),
        source,
    };
    let status = seal_status(node).await.map_err(node_err)?;
    if !status.sealed {
        return Ok(UnsealOutcome::AlreadyUnsealed);
    }
    if !status.initialized {
        return Err(UnsealError::NotInitialized { pod });
    }
    if status.auto_unseal() {
        return wait_for_self_unseal(node, status.seal().name(), SELF_UNSEAL_WAIT).await;
    }
    if status.progress > 0 {
        tracing::debug!(pod = %pod, progress = status.progress, "resetting stale unseal progress");
        reset_unseal(node).await.map_err(node_err)?;
    }
    // A node that has joined but not yet unsealed may report t=0.
    let needed = if status.threshold > 0 {
        status.threshold as usize
    } else {
        threshold
    };
    if needed > shares.len() {
        return Err(UnsealError::NotEnoughShares {
            pod,
            needed,
            have: shares.len(),
        });
    }
    let mut last_progress = 0;
    for (i, share) in shares.iter().take(needed).enumerate() {
        let last = i + 1 == needed;
        match submit_unseal_share(node, share).await {
            Ok(s) if !s.sealed => {
                return Ok(UnsealOutcome::Unsealed {
                    shares_submitted: i + 1,
                })
            }
            Ok(s) if last => last_progress = s.progress,
            Ok(s) if s.progress == 0 && i > 0 => {
                return Err(UnsealError::Rejected {
                    pod,
                    reason: format!("progress fell back to 0 after share {}", i + 1),
                })
            }
            Ok(s) => last_progress = s.progress,
            Err(NodeError::Api {
                status: 400,
                errors,
            }) => {
                let _ = reset_unseal(node).await;
                return Err(UnsealError::Rejected {
                    pod,
                    reason: errors.join("; "),
                });
            }
            Err(e) => return Err(node_err(e)),
        }
    }
    // A node joining raft finishes unsealing in the background once it has
    // answered the leader's challenge; give it a bounded moment.
    let unsealed = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { seal_status(node).await.ok().filter(|s| !s.sealed) },
    )
    .await;
    match unsealed {
        Some(_) => Ok(UnsealOutcome::Unsealed {
            shares_submitted: needed,
        }),
        None => {
            // Leave no partial progress behind for the next attempt to trip over.
            let _ = reset_unseal(node).await;
            Err(UnsealError::StillSealed {
                pod,
                submitted: needed,
                progress: last_progress,
            })
        }
    }
}

/// Unseals every node at once; one result per node, in the same order.
pub async fn unseal_all<N: VaultNode>(
    nodes: &[N],
    shares: &[Secret],
    threshold: usize,
) -> Vec<Result<UnsealOutcome, UnsealError>> {
    futures::future::join_all(nodes.iter().map(|n| unseal_node(n, shares, threshold))).await
}

/// One generation of shares to try.
#[derive(Clone, Copy, Debug)]
pub struct KeySet<'a> {
    pub generation: u32,
    pub shares: &'a [Secret],
    pub threshold: usize,
}

/// Unseals `node` with the first generation it accepts, in the order given.
/// Returns the outcome and the generation used (`None` if already unsealed).
///
/// # Guarantees
/// A generation the node refuses leaves no partial progress behind; the
/// error of the last generation tried is returned when none is accepted.
pub async fn unseal_with_any(
    node: &impl VaultNode,
    sets: &[KeySet<'_>],
) -> Result<(UnsealOutcome, Option<u32>), UnsealError> {
    if sets.is_empty() {
        // No shares (an auto-unseal cluster): only waiting can help.
        let outcome = unseal_node(node, &[], 0).await?;
        return Ok((outcome, None));
    }
    let mut last = None;
    for set in sets {
        match unseal_node(node, set.shares, set.threshold).await {
            Ok(outcome @ (UnsealOutcome::AlreadyUnsealed | UnsealOutcome::SelfUnsealed)) => {
                return Ok((outcome, None))
            }
            Ok(outcome) => return Ok((outcome, Some(set.generation))),
            Err(
                e @ (UnsealError::Rejected { .. }
                | UnsealError::StillSealed { .. }
                | UnsealError::NotEnoughShares { .. }),
            ) => {
                tracing::debug!(pod = node.name(), generation = set.generation, error = %e, "generation not accepted");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(UnsealError::NotEnoughShares {
        pod: node.name().to_owned(),
        needed: 1,
        have: 0,
    }))
}
