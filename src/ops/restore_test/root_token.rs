//! Which stored root token the restored data accepts, for both paths of
//! the restore-test (Shamir step 5, auto-unseal step 5b): the proof that a
//! restore of this snapshot could be finished with what is stored, as
//! `restore` step 5 chooses its token.
//!
//! Decides what a lookup's answer means: 403 is a token the data does not
//! know (decided at once), anything else is asked again within a budget and,
//! if it never settles, is the test's own failure, not the snapshot's.

use super::RestoreTestError;
use crate::ops::node::{NodeError, Request, VaultNode};
use crate::ops::secret::Secret;
use std::time::{Duration, Instant};

/// How often an unsettled lookup is asked again.
const ASK_AGAIN: Duration = Duration::from_millis(300);

/// The first of `candidates` the leading `server` accepts
/// (`auth/token/lookup-self`). Every candidate refused with 403 is
/// [`RestoreTestError::RootToken`], a verdict: the stored credentials of
/// `generation` are not this snapshot's, and a restore of it could not be
/// finished with them. Candidates that keep failing otherwise until
/// `timeout` are [`RestoreTestError::RootTokenUnchecked`].
pub(super) async fn accepted_token<N: VaultNode>(
    server: &N,
    candidates: &[Secret],
    generation: u32,
    timeout: Duration,
) -> Result<Secret, RestoreTestError> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&Secret> = candidates.iter().collect();
    loop {
        let mut unsure = Vec::new();
        let mut last = None;
        for token in pending {
            match server
                .call(Request::read("auth/token/lookup-self").with_token(token))
                .await
            {
                Ok(_) => return Ok(token.clone()),
                Err(NodeError::Api { status: 403, .. }) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "a root token lookup to ask again");
                    unsure.push(token);
                    last = Some(e);
                }
            }
        }
        let Some(source) = last else {
            return Err(RestoreTestError::RootToken { generation });
        };
        if Instant::now() >= deadline {
            return Err(RestoreTestError::RootTokenUnchecked { generation, source });
        }
        pending = unsure;
        tokio::time::sleep(ASK_AGAIN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::secret::SecretAnswer;
    use serde_json::{json, Value};
    use std::sync::Mutex;

    /// A leading server that knows `known` tokens, answers the first `busy`
    /// lookups with a 500, and counts the lookups.
    struct Tokens {
        known: Vec<&'static str>,
        busy: Mutex<u32>,
        lookups: Mutex<u32>,
    }

    impl Tokens {
        fn new(known: &[&'static str], busy: u32) -> Self {
            Tokens {
                known: known.to_vec(),
                busy: Mutex::new(busy),
                lookups: Mutex::new(0),
            }
        }

        fn lookups(&self) -> u32 {
            *self.lookups.lock().unwrap()
        }
    }

    impl VaultNode for Tokens {
        fn name(&self) -> &str {
            "openbao-1/restore-test"
        }

        async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
            assert_eq!(req.path, "auth/token/lookup-self");
            *self.lookups.lock().unwrap() += 1;
            {
                let mut busy = self.busy.lock().unwrap();
                if *busy > 0 {
                    *busy -= 1;
                    return Err(NodeError::Api {
                        status: 500,
                        errors: vec![
                            "local node not active but active cluster node not found".into()
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

        async fn call_secret(&self, req: Request<'_>) -> Result<SecretAnswer, NodeError> {
            panic!("the test does not expect {}", req.path)
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_stored_token_is_found_among_the_candidates_and_refusals_are_decided_at_once() {
        let candidates = [Secret::new("s.first"), Secret::new("s.second")];
        let server = Tokens::new(&["s.second"], 0);
        let found = accepted_token(&server, &candidates, 1, TIMEOUT).await;
        assert_eq!(found.unwrap().expose(), "s.second");

        // Tokens the data does not know: one round, no polling budget
        // spent, and a verdict.
        let strangers = Tokens::new(&[], 0);
        let started = Instant::now();
        let err = accepted_token(&strangers, &candidates, 3, TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RestoreTestError::RootToken { generation: 3 }),
            "{err}"
        );
        assert!(err.is_verdict());
        assert_eq!(strangers.lookups(), 2);
        assert!(started.elapsed() < ASK_AGAIN);

        // No stored token at all is a refusal too.
        let err = accepted_token(&strangers, &[], 3, TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, RestoreTestError::RootToken { .. }), "{err}");

        // A server that is busy at first is asked again.
        let busy = Tokens::new(&["s.first"], 3);
        let found = accepted_token(&busy, &candidates[..1], 1, TIMEOUT).await;
        assert_eq!(found.unwrap().expose(), "s.first");
        assert_eq!(busy.lookups(), 4);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_the_lookup_is_the_tests_failure_not_a_verdict() {
        let down = Tokens::new(&["s.first"], u32::MAX);
        let err = accepted_token(
            &down,
            &[Secret::new("s.first")],
            1,
            Duration::from_millis(700),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, RestoreTestError::RootTokenUnchecked { .. }),
            "{err}"
        );
        assert!(!err.is_verdict());
        assert!(down.lookups() >= 2, "asked again: {}", down.lookups());
        // The error names the generation and the server's answer, never a token.
        let text = err.to_string();
        assert!(
            text.contains("generation 1") && text.contains("500"),
            "{text}"
        );
        assert!(!text.contains("s.first"), "{text}");
    }
}
