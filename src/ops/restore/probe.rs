//! What a node tells after a restore: which stored root token it accepts,
//! whether it resealed itself to take up the snapshot's keyring, and
//! whether it still serves the old data after a refused stream.

use crate::ops::node::{seal_status, Request, VaultNode};
use crate::ops::secret::Secret;
use crate::ops::wait::poll_until;
use std::time::Duration;

/// The first of `candidates` that `node` accepts, retried for a few seconds
/// (a node that just became active may not serve tokens yet).
pub async fn working_token(node: &impl VaultNode, candidates: &[Secret]) -> Option<Secret> {
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(500),
        || async {
            for t in candidates {
                if token_works(node, t).await {
                    return Some(t.clone());
                }
            }
            None
        },
    )
    .await
}

/// True when `token` is accepted by `node` (a read of its own token).
pub async fn token_works(node: &impl VaultNode, token: &Secret) -> bool {
    node.call(Request::read("auth/token/lookup-self").with_token(token))
        .await
        .is_ok()
}

/// After a forced restore the node seals itself to take up the snapshot's
/// keyring; waits (bounded) until it has, or until `token` works (no reseal
/// was needed).
pub async fn wait_for_reseal(node: &impl VaultNode, token: &Secret, timeout: Duration) {
    let settled = poll_until(timeout, Duration::from_millis(300), || async {
        match seal_status(node).await {
            Ok(s) if s.sealed => Some(()),
            Ok(_) if token_works(node, token).await => Some(()),
            _ => None,
        }
    })
    .await;
    if settled.is_none() {
        tracing::warn!(
            pod = node.name(),
            "the node neither resealed nor accepts the snapshot's token yet; going on"
        );
    }
}

/// After a refused stream: the node is unsealed and still accepts the token
/// of the data it had, so nothing was applied.
pub(super) async fn still_serves(node: &impl VaultNode, token: &Secret) -> bool {
    matches!(seal_status(node).await, Ok(s) if !s.sealed) && token_works(node, token).await
}
