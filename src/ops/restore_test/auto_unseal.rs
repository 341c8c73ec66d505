//! Step 5 of the restore-test for an auto-unseal snapshot (see the parent
//! module's `# Expected flow`, 5a to 5e): the seal, not stored shares,
//! opens the restored data, so the proof is that it does so again from
//! disk after a restart, and that the stored root token and recovery keys
//! of the manifest's generation are the restored data's.

use super::root_token::accepted_token;
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
    let token = accepted_token(server, &proof.tokens, shape.generation, proof.timeout).await?;
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
        || accepted_token(
            server,
            std::slice::from_ref(&token),
            shape.generation,
            proof.timeout,
        )
        .await
        .is_err()
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
    /// it counts the token lookups it answers.
    struct Scripted {
        sealed: bool,
        known: Vec<&'static str>,
        lookups: Mutex<u32>,
    }

    impl Scripted {
        fn new(sealed: bool, known: &[&'static str]) -> Self {
            Scripted {
                sealed,
                known: known.to_vec(),
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
}
