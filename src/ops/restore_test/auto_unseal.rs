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
    restored_in_place(server, temporary, seal, SEALED_GRACE, proof.timeout).await?;
    step("restored data reloaded through the seal");
    // The credentials first, on the data reloaded in place: a snapshot whose
    // stored credentials are not its own fails without waiting for a restart.
    let Some(token) = accepted_token(server, &proof.tokens, proof.timeout).await else {
        return Err(RestoreTestError::RootToken {
            generation: shape.generation,
        });
    };
    step("root token");
    // A generation stored without recovery keys (OpenBao's default since
    // 2.4) has none to check, as in `recover`.
    let recovery_keys_verified = if shape.recovery_keys_b64.is_empty() {
        None
    } else {
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
        Some(true)
    };
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
        Some(path) => Some(super::read_sentinel(server, path, &token).await?),
    };
    Ok(RestoreTestReport {
        generation: shape.generation,
        shares_submitted: 0,
        seal: Some(seal.to_owned()),
        recovery_keys_verified,
        root_token_valid: true,
        sentinel,
    })
}

/// 5a: waits until the server runs on the restored data (unsealed, and the
/// temporary token refused with 403). Sealed for `grace` means the seal
/// did not open the snapshot.
async fn restored_in_place<N: VaultNode>(
    server: &N,
    temporary: &Secret,
    seal: &str,
    grace: Duration,
    timeout: Duration,
) -> Result<(), RestoreTestError> {
    let deadline = Instant::now() + timeout;
    let mut sealed_since: Option<Instant> = None;
    loop {
        match crate::ops::node::seal_status(server).await {
            Ok(s) if s.sealed => {
                let since = *sealed_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= grace {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::secret::SecretAnswer;
    use serde_json::{json, Value};
    use std::sync::Mutex;

    /// A throwaway server whose seal state and known tokens the test sets;
    /// it counts the token lookups it answers, and answers the first
    /// `busy` of them with a 500.
    struct Scripted {
        sealed: bool,
        known: Vec<&'static str>,
        busy: Mutex<u32>,
        lookups: Mutex<u32>,
    }

    impl Scripted {
        fn new(sealed: bool, known: &[&'static str]) -> Self {
            Scripted {
                sealed,
                known: known.to_vec(),
                busy: Mutex::new(0),
                lookups: Mutex::new(0),
            }
        }

        fn lookups(&self) -> u32 {
            *self.lookups.lock().unwrap()
        }
    }

    impl VaultNode for Scripted {
        fn name(&self) -> &str {
            "openbao-1/restore-test"
        }

        async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
            match req.path {
                "sys/seal-status" => Ok(json!({
                    "initialized": true, "sealed": self.sealed, "type": "static"
                })),
                "auth/token/lookup-self" => {
                    *self.lookups.lock().unwrap() += 1;
                    {
                        let mut busy = self.busy.lock().unwrap();
                        if *busy > 0 {
                            *busy -= 1;
                            return Err(NodeError::Api {
                                status: 500,
                                errors: vec![
                                    "local node not active but active cluster node not found"
                                        .into(),
                                ],
                            });
                        }
                    }
                    let token = req.token.map(|t| t.expose().to_owned()).unwrap_or_default();
                    if self.known.contains(&token.as_str()) {
                        Ok(json!({"policies": ["root"]}))
                    } else {
                        Err(NodeError::Api {
                            status: 403,
                            errors: vec!["permission denied".into()],
                        })
                    }
                }
                other => panic!("the test does not expect a call to {other}"),
            }
        }

        async fn call_secret(&self, req: Request<'_>) -> Result<SecretAnswer, NodeError> {
            panic!("the test does not expect {}", req.path)
        }
    }

    const GRACE: Duration = Duration::from_millis(700);
    const TIMEOUT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn the_restored_data_is_the_servers_once_the_temporary_token_is_refused() {
        let temporary = Secret::new("s.temporary");
        let reloaded = Scripted::new(false, &["s.stored"]);
        restored_in_place(&reloaded, &temporary, "static", GRACE, TIMEOUT)
            .await
            .unwrap();
        // Still the temporary data at the deadline: the restore did not take,
        // which says nothing about the snapshot.
        let not_yet = Scripted::new(false, &["s.temporary"]);
        let err = restored_in_place(&not_yet, &temporary, "static", GRACE, TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, RestoreTestError::NotApplied { .. }), "{err}");
        assert!(!err.is_verdict());
    }

    #[tokio::test]
    async fn a_server_that_stays_sealed_after_the_restore_was_not_opened_by_its_seal() {
        let temporary = Secret::new("s.temporary");
        let sealed = Scripted::new(true, &[]);
        let started = Instant::now();
        let err = restored_in_place(&sealed, &temporary, "transit", GRACE, TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RestoreTestError::SealDidNotOpen { .. }),
            "{err}"
        );
        assert!(err.is_verdict());
        assert!(
            err.to_string().contains("live server's transit seal"),
            "{err}"
        );
        // Decided after the grace, not at the deadline.
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(sealed.lookups(), 0, "no token is sent to a sealed server");
    }

    #[tokio::test]
    async fn a_stored_token_is_found_among_the_candidates_and_refusals_are_decided_at_once() {
        let server = Scripted::new(false, &["s.second"]);
        let candidates = [Secret::new("s.first"), Secret::new("s.second")];
        let found = accepted_token(&server, &candidates, TIMEOUT).await;
        assert_eq!(
            found.map(|t| t.expose().to_owned()),
            Some("s.second".into())
        );

        // Tokens the data does not know: one round, no polling budget spent.
        let strangers = Scripted::new(false, &[]);
        let started = Instant::now();
        assert!(accepted_token(&strangers, &candidates, TIMEOUT)
            .await
            .is_none());
        assert_eq!(strangers.lookups(), 2);
        assert!(started.elapsed() < Duration::from_millis(300));

        // A server that is busy at first is asked again.
        let busy = Scripted::new(false, &["s.first"]);
        *busy.busy.lock().unwrap() = 3;
        let found = accepted_token(&busy, &candidates[..1], TIMEOUT).await;
        assert_eq!(found.map(|t| t.expose().to_owned()), Some("s.first".into()));
        assert_eq!(busy.lookups(), 4);
    }
}
