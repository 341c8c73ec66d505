//! Step 5 of the restore-test for an auto-unseal snapshot (see the parent
//! module's `# Expected flow`, 5a to 5e): the seal, not stored shares,
//! opens the restored data, so the proof is that it does so again from
//! disk after a restart, and that the stored root token and recovery keys
//! of the manifest's generation are the restored data's.

use super::{Proof, Restart, RestoreTestError, RestoreTestReport};
use crate::ops::node::{NodeError, Request, VaultNode};
use crate::ops::reconcile::wait_for_leader;
use crate::ops::secret::Secret;
use crate::ops::wait::poll_until;
use std::time::{Duration, Instant};

/// How long an auto-unseal server may stay sealed after the forced restore
/// before the seal is taken not to open the snapshot (a reload through the
/// seal takes well under a second once it starts).
const SEALED_GRACE: Duration = Duration::from_secs(10);

/// Steps 5a to 5e for an auto-unseal snapshot (see the module header).
pub(super) async fn through_the_seal<N: VaultNode, R: Restart>(
    server: &N,
    restart: &R,
    proof: &Proof<'_>,
    temporary: &Secret,
    seal: &str,
    step: &impl Fn(&str),
) -> Result<RestoreTestReport, RestoreTestError> {
    let shape = proof.generation;
    restored_in_place(server, temporary, seal, proof.timeout).await?;
    step("restored data reloaded through the seal");
    // The credentials first, on the data reloaded in place: a snapshot whose
    // stored credentials are not its own fails without waiting for a restart.
    let Some(token) = accepted_token(server, &proof.tokens, proof.timeout).await else {
        return Err(RestoreTestError::RootToken {
            generation: shape.generation,
        });
    };
    step("root token");
    let accepted = crate::ops::rotate::probe_shares(server, &token, shape)
        .await
        .map_err(|source| RestoreTestError::RecoveryProbe {
            generation: shape.generation,
            source,
        })?;
    if !accepted {
        return Err(RestoreTestError::RecoveryKeys {
            generation: shape.generation,
        });
    }
    step("recovery keys");
    restart
        .restart()
        .await
        .map_err(|source| RestoreTestError::Restart { source })?;
    unsealed_by_the_seal(server, seal, proof.timeout).await?;
    wait_for_leader(std::slice::from_ref(server), proof.timeout)
        .await
        .map_err(|source| RestoreTestError::Leader { source })?;
    // What came back from disk is the restored data: the temporary token is
    // unknown to it and the stored one still answers.
    if crate::ops::restore::token_works(server, temporary).await
        || accepted_token(server, std::slice::from_ref(&token), proof.timeout)
            .await
            .is_none()
    {
        return Err(RestoreTestError::RestartLostRestore);
    }
    step("restarted and unsealed by the seal");
    let sentinel = match proof.sentinel {
        None => None,
        Some(path) => {
            server
                .call(Request::read(path).with_token(&token))
                .await
                .map_err(|source| RestoreTestError::Sentinel {
                    path: path.to_owned(),
                    source,
                })?;
            Some(path.to_owned())
        }
    };
    Ok(RestoreTestReport {
        generation: shape.generation,
        shares_submitted: 0,
        seal: Some(seal.to_owned()),
        recovery_keys_verified: Some(true),
        root_token_valid: true,
        sentinel,
    })
}

/// 5a: waits until the server runs on the restored data (unsealed, and the
/// temporary token refused with 403). Sealed for [`SEALED_GRACE`] means
/// the seal did not open the snapshot.
async fn restored_in_place<N: VaultNode>(
    server: &N,
    temporary: &Secret,
    seal: &str,
    timeout: Duration,
) -> Result<(), RestoreTestError> {
    let deadline = Instant::now() + timeout;
    let mut sealed_since: Option<Instant> = None;
    loop {
        match crate::ops::node::seal_status(server).await {
            Ok(s) if s.sealed => {
                let since = *sealed_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SEALED_GRACE {
                    return Err(RestoreTestError::SealDidNotOpen {
                        seal: seal.to_owned(),
                        when: "after the forced restore",
                        waited: since.elapsed(),
                    });
                }
            }
            Ok(_) => {
                sealed_since = None;
                let lookup = server
                    .call(Request::read("auth/token/lookup-self").with_token(temporary))
                    .await;
                if matches!(lookup, Err(NodeError::Api { status: 403, .. })) {
                    return Ok(());
                }
            }
            Err(e) => tracing::debug!(error = %e, "waiting for the restored data"),
        }
        if Instant::now() >= deadline {
            return Err(match sealed_since {
                Some(since) => RestoreTestError::SealDidNotOpen {
                    seal: seal.to_owned(),
                    when: "after the forced restore",
                    waited: since.elapsed(),
                },
                None => RestoreTestError::NotApplied { waited: timeout },
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// 5b: the first of `candidates` the leading server accepts. A 403 is a
/// token the data does not know; any other error is asked again (bounded),
/// so that a refusal is decided in one round, not after a polling budget.
async fn accepted_token<N: VaultNode>(
    server: &N,
    candidates: &[Secret],
    timeout: Duration,
) -> Option<Secret> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&Secret> = candidates.iter().collect();
    while !pending.is_empty() {
        let mut unsure = Vec::new();
        for token in pending {
            match server
                .call(Request::read("auth/token/lookup-self").with_token(token))
                .await
            {
                Ok(_) => return Some(token.clone()),
                Err(NodeError::Api { status: 403, .. }) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "a root token lookup to ask again");
                    unsure.push(token);
                }
            }
        }
        if unsure.is_empty() || Instant::now() >= deadline {
            return None;
        }
        pending = unsure;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

/// 5d: the restarted server must unseal itself (nothing is submitted).
async fn unsealed_by_the_seal<N: VaultNode>(
    server: &N,
    seal: &str,
    timeout: Duration,
) -> Result<(), RestoreTestError> {
    let unsealed = poll_until(timeout, Duration::from_millis(300), || async {
        match crate::ops::node::seal_status(server).await {
            Ok(s) if !s.sealed => Some(()),
            _ => None,
        }
    })
    .await;
    unsealed.ok_or_else(|| RestoreTestError::SealDidNotOpen {
        seal: seal.to_owned(),
        when: "when restarted from the restored data",
        waited: timeout,
    })
}
