//! Proving that a credentials document belongs to a live cluster before it is
//! stored (`kubectl vault credentials import`).
//!
//! Owns the order of the checks, cheapest and least intrusive first that still
//! proves something: a sealed pod is unsealed with the document's shares (the
//! server itself checks them, nothing is sealed to test them); when every pod
//! is unsealed, the shares must be the stored current generation, or the
//! active node must take them in a rekey probe that is cancelled before
//! verification. A root token that works proves nothing about shares (a
//! rekey keeps the token), and neither does a match with an older, retired
//! generation. Reading the document and writing it are the caller's business.

use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::credentials::Credentials;
use crate::ops::node::{leader, seal_status, NodeError, VaultNode};
use crate::ops::rotate::probe_shares;
use crate::ops::secret::Secret;
use crate::ops::unseal::{unseal_node, UnsealError, UnsealOutcome};

/// What showed that the document belongs to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "proof")]
pub enum Proof {
    /// Its shares unsealed these sealed pods.
    Unsealed { pods: Vec<String> },
    /// Its shares are those of the stored current generation.
    MatchesStored { generation: u32 },
    /// The active node took its shares in a rekey probe (cancelled before
    /// verification: nothing changed).
    RekeyProbe { pod: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not read the seal status of pod {pod}: {source}")]
    ReadStatus { pod: String, source: NodeError },
    #[error("no pod is initialized, so these credentials cannot belong to this cluster; a new cluster gets its keys from `kubectl vault init`")]
    NotInitialized,
    #[error("the shares do not unseal the cluster: {0}")]
    SharesRejected(#[source] UnsealError),
    #[error("every pod is unsealed and nothing shows these shares are the cluster's current ones ({reason}); restart one pod so that it comes back sealed, then import again to have its shares checked by unsealing it")]
    Unproven { reason: String },
    #[error("the active node {pod} refused these shares in a rekey probe: they are not the cluster's current shares (an older generation, or another cluster's); nothing changed")]
    NotCurrent { pod: String },
}

/// Proves that `candidate` belongs to the cluster; `stored` is what the store
/// holds now (its current and historical generations count as proof).
///
/// # Guarantees
/// Never seals a pod; a share the server refuses leaves no unseal progress behind.
pub async fn prove<C: VaultCluster>(
    cluster: &C,
    candidate: &Credentials,
    stored: Option<&Credentials>,
) -> Result<Proof, ProveError> {
    let nodes = cluster.nodes().await?;
    let mut sealed = Vec::new();
    let mut unsealed = Vec::new();
    for node in &nodes {
        let status = seal_status(node)
            .await
            .map_err(|source| ProveError::ReadStatus {
                pod: node.name().to_owned(),
                source,
            })?;
        match (status.initialized, status.sealed) {
            (false, _) => {}
            (true, true) => sealed.push(node),
            (true, false) => unsealed.push(node),
        }
    }
    if sealed.is_empty() && unsealed.is_empty() {
        return Err(ProveError::NotInitialized);
    }
    if !sealed.is_empty() && !candidate.seal.is_auto() {
        // Every sealed pod at once, each directly: a raft follower may only
        // report unsealed once enough peers are up to elect a leader.
        let threshold = usize::from(candidate.key_threshold);
        let results = futures::future::join_all(
            sealed
                .iter()
                .map(|node| unseal_node(*node, candidate.unseal_shares(), threshold)),
        )
        .await;
        let mut pods = Vec::new();
        for (node, result) in sealed.iter().zip(results) {
            match result {
                Ok(UnsealOutcome::Unsealed { .. } | UnsealOutcome::AlreadyUnsealed) => {
                    pods.push(node.name().to_owned());
                }
                Ok(UnsealOutcome::SelfUnsealed) => {
                    return Err(ProveError::Unproven {
                        reason: format!(
                            "pod {} unseals itself through a seal provider, so unsealing proves nothing about shares",
                            node.name()
                        ),
                    })
                }
                Err(e) => return Err(ProveError::SharesRejected(e)),
            }
        }
        return Ok(Proof::Unsealed { pods });
    }
    if let Some(s) = stored.filter(|s| matching_generation(candidate, s) == Some(s.generation)) {
        return Ok(Proof::MatchesStored {
            generation: s.generation,
        });
    }
    let mut active = None;
    for node in &unsealed {
        // The HA leader, or a standalone server (not HA: it is the only one).
        if leader(*node)
            .await
            .is_ok_and(|l| l.is_self || !l.ha_enabled)
        {
            active = Some(*node);
            break;
        }
    }
    let Some(active) = active else {
        return Err(ProveError::Unproven {
            reason: "no pod is the active node".into(),
        });
    };
    let tokens = std::iter::once(&candidate.root_token).chain(stored.map(|s| &s.root_token));
    let mut reason = String::from("no token was accepted for the rekey probe");
    for token in tokens {
        match probe_shares(active, token, candidate).await {
            Ok(true) => {
                return Ok(Proof::RekeyProbe {
                    pod: active.name().to_owned(),
                })
            }
            Ok(false) => {
                return Err(ProveError::NotCurrent {
                    pod: active.name().to_owned(),
                })
            }
            Err(e) => reason = e.to_string(),
        }
    }
    Err(ProveError::Unproven { reason })
}

/// The stored generation whose shares are exactly the candidate's (compared by fingerprint).
pub fn matching_generation(candidate: &Credentials, stored: &Credentials) -> Option<u32> {
    let same = |a: &[Secret], b: &[Secret]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
    };
    let keys = |unseal: &[Secret], recovery: &[Secret]| -> Vec<Secret> {
        unseal.iter().chain(recovery).cloned().collect()
    };
    let mine = keys(&candidate.unseal_keys_b64, &candidate.recovery_keys_b64);
    if same(
        &mine,
        &keys(&stored.unseal_keys_b64, &stored.recovery_keys_b64),
    ) {
        return Some(stored.generation);
    }
    stored
        .history
        .iter()
        .find(|g| same(&mine, &keys(&g.unseal_keys_b64, &g.recovery_keys_b64)))
        .map(|g| g.generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::credentials::{sample, KeyGeneration};

    #[test]
    fn a_history_generation_counts_as_a_match() {
        let stored = sample(3, 2);
        let mut older = sample(3, 2);
        older.unseal_keys_b64 = vec![
            Secret::new("old-0"),
            Secret::new("old-1"),
            Secret::new("old-2"),
        ];
        assert_eq!(matching_generation(&stored, &stored), Some(1));
        assert_eq!(matching_generation(&older, &stored), None);
        let mut with_history = sample(3, 2);
        with_history.generation = 2;
        with_history.history.push(KeyGeneration {
            recovery_keys_b64: vec![],
            generation: 1,
            unseal_keys_b64: older.unseal_keys_b64.clone(),
            key_threshold: 2,
            key_shares: 3,
            retired_at: "2026-11-25T00:00:00Z".into(),
            root_token: None,
            cluster_id: String::new(),
        });
        assert_eq!(matching_generation(&older, &with_history), Some(1));
    }
}
