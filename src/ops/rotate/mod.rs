//! `rotate`: rekey the unseal shares and rotate the root token so that no
//! crash can leave a state in which no stored generation unseals the cluster
//! or no stored root token works.
//!
//! Owns the order of the steps and the resume rules. Locking and prompting are
//! the caller's business.
//!
//! # Expected flow (rekey)
//! 1. Check the stored credentials against the seal status (threshold and
//!    share count) and that every pod is unsealed.
//! 2. Cancel a stale rekey, start one with `require_verification`.
//! 3. Submit a threshold of the current shares; the last answer holds the new
//!    shares, which are not active yet.
//! 4. Store previous and next credentials in the checkpoint (read back).
//! 5. Submit a threshold of the new shares to verify: only now they are active.
//! 6. Store the next credentials (previous generation moved to history), then
//!    delete the checkpoint.
//!
//! # Expected flow (root token)
//! Cancel a stale attempt, run the OTP flow with the current shares, decode
//! the token, store it through the checkpoint, prove it with
//! `auth/token/lookup-self`, store the final credentials, and only then
//! revoke the old token.
//!
//! # Guarantees
//! Until step 5 the old shares are the only active ones and they are stored;
//! from step 4 on the new ones are stored too. Rekey progress lives in the
//! active node's memory: a restart wipes it, and a resume then finds out which
//! stored generation the server accepts by a probe rekey that is cancelled
//! before verification, so the probe changes nothing.

mod root_token;
mod session;

use crate::ops::checkpoint::{now_rfc3339, Checkpoint, Phase};
use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status, NodeError, VaultNode};
use crate::ops::secret::Secret;
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};

use root_token::{finish_root_token, rotate_root_token};
pub use session::probe_shares;
use session::{detect_api, Session};

#[derive(Clone, Debug)]
pub struct RotateOptions {
    /// New share count and threshold (of the recovery keys on an auto-unseal
    /// cluster); `None` keeps the current ones.
    pub key_shares: Option<u8>,
    pub key_threshold: Option<u8>,
    pub rekey: bool,
    /// The rekey is of the recovery keys (`--recovery`): required on an
    /// auto-unseal cluster, refused on a Shamir one.
    pub recovery: bool,
    pub root_token: bool,
    /// Older generations to keep in the history.
    pub keep_generations: usize,
    pub holder: String,
    pub budget: RetryBudget,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub struct RotateOutcome {
    pub generation: u32,
    pub rekeyed: bool,
    pub root_token_rotated: bool,
    /// Set when an interrupted rotate was finished from its checkpoint.
    pub resumed: bool,
    pub api: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("no credentials in {object}; run `kubectl vault init` or `kubectl vault credentials import`")]
    NoCredentials { object: String },
    #[error("{object} could not be read: {source}")]
    LoadStore { object: String, source: StoreError },
    #[error("pods {} are sealed; run `kubectl vault unseal` first, then rotate", pods.join(", "))]
    Sealed { pods: Vec<String> },
    #[error("the stored credentials do not match the cluster: {reason}; check `kubectl vault status` and `kubectl vault credentials show`")]
    Mismatch { reason: String },
    #[error("the server rejected the stored shares during the rekey: {reason}; nothing changed")]
    SharesRejected { reason: String },
    #[error("an interrupted rotate could not be finished: the rekey in progress was lost (the active node restarted, sealed or stepped down) before its new shares were verified. Nothing changed: the stored generation {generation} is still current. Run `kubectl vault rotate` to start a fresh rotate")]
    RekeyLost { generation: u32 },
    #[error("neither the previous nor the new shares in {checkpoint} are accepted by the cluster; do not delete {checkpoint}; check `kubectl vault status`")]
    NoGenerationAccepted { checkpoint: String },
    #[error("{step} on pod {pod} failed: {source}")]
    Node {
        step: &'static str,
        pod: String,
        source: NodeError,
    },
    #[error("could not store {object}: {source}; nothing is lost, re-run `kubectl vault rotate` to resume")]
    Store { object: String, source: StoreError },
    #[error(transparent)]
    OtherOperation(#[from] crate::ops::operation::OtherOperation),
    #[error("the new root token does not work: {0}")]
    NewTokenRejected(NodeError),
    #[error("pod {pod} took all {submitted} new shares for verification but never answered that the rekey is complete; the new shares stay in the checkpoint, re-run `kubectl vault rotate` to resume")]
    VerifyIncomplete { pod: String, submitted: usize },
}

impl RotateError {
    /// Whether re-running cannot help until something changes (exit 1), as
    /// opposed to a failure that a re-run resumes (exit 2). Every variant is
    /// named, so a new one must be classified here.
    pub fn is_refusal(&self) -> bool {
        match self {
            RotateError::InvalidOptions(_)
            | RotateError::NoCredentials { .. }
            | RotateError::LoadStore { .. }
            | RotateError::Sealed { .. }
            | RotateError::Mismatch { .. }
            | RotateError::SharesRejected { .. }
            | RotateError::RekeyLost { .. }
            | RotateError::OtherOperation(_) => true,
            RotateError::NoGenerationAccepted { .. }
            | RotateError::Node { .. }
            | RotateError::Store { .. }
            | RotateError::NewTokenRejected(_)
            | RotateError::VerifyIncomplete { .. } => false,
        }
    }
}

/// What a rekey changes: the unseal shares (Shamir) or the recovery keys
/// (auto-unseal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Barrier,
    Recovery,
}

impl Target {
    fn of(credentials: &Credentials) -> Self {
        if credentials.seal.is_auto() {
            Target::Recovery
        } else {
            Target::Barrier
        }
    }
}

/// Runs (or resumes) a rotate on the active node `leader`; `nodes` are all pods.
pub async fn run<N: VaultNode>(
    leader: &N,
    nodes: &[N],
    store: &impl CredentialStore,
    opts: &RotateOptions,
) -> Result<RotateOutcome, RotateError> {
    let current = store
        .load_credentials()
        .await
        .map_err(|source| RotateError::LoadStore {
            object: store.credentials_object(),
            source,
        })?
        .ok_or_else(|| RotateError::NoCredentials {
            object: store.credentials_object(),
        })?;
    let checkpoint = store
        .load_checkpoint()
        .await
        .map_err(|source| RotateError::LoadStore {
            object: store.checkpoint_object(),
            source,
        })?;
    if let crate::ops::operation::Claim::Busy(found) = crate::ops::operation::claim(
        checkpoint.as_ref(),
        crate::ops::operation::Operation::Rotate,
    ) {
        return Err(RotateError::OtherOperation(
            crate::ops::operation::OtherOperation::new(store.checkpoint_object(), found),
        ));
    }
    let target = Target::of(&current);
    check_target(&current, target, opts)?;
    let api = detect_api(leader, &current.root_token).await?;
    let mut session = Session {
        node: leader,
        api,
        target,
        token: current.root_token.clone(),
    };

    let mut outcome = RotateOutcome {
        generation: current.generation,
        rekeyed: false,
        root_token_rotated: false,
        resumed: false,
        api: api.name(target),
    };
    let mut credentials = current.clone();
    match checkpoint.map(|c| c.phase) {
        Some(Phase::RotatePending {
            previous,
            next,
            verification_nonce,
        }) => {
            outcome.resumed = true;
            credentials =
                resume_rekey(&session, store, &previous, &next, &verification_nonce, opts).await?;
            outcome.rekeyed = true;
            outcome.generation = credentials.generation;
        }
        Some(Phase::RootTokenPending {
            previous_root_token,
            next,
        }) => {
            outcome.resumed = true;
            session.token = next.root_token.clone();
            finish_root_token(&session, store, &previous_root_token, &next, opts).await?;
            outcome.root_token_rotated = true;
            return Ok(outcome);
        }
        _ => {
            preflight(nodes, &current, opts).await?;
            if opts.rekey {
                credentials = rekey(&session, store, &current, opts).await?;
                outcome.rekeyed = true;
                outcome.generation = credentials.generation;
            }
        }
    }
    if opts.root_token {
        session.token = credentials.root_token.clone();
        rotate_root_token(&session, store, &credentials, opts).await?;
        outcome.root_token_rotated = true;
    }
    Ok(outcome)
}

/// `--recovery` on the cluster's seal: recovery keys exist only on an
/// auto-unseal cluster, and only they authorise anything there.
fn check_target(
    current: &Credentials,
    target: Target,
    opts: &RotateOptions,
) -> Result<(), RotateError> {
    match target {
        Target::Barrier if opts.recovery => Err(RotateError::InvalidOptions(
            "--recovery: this cluster unseals with Shamir shares and has no recovery keys; `kubectl vault rotate` rekeys its unseal shares".into(),
        )),
        Target::Recovery if opts.rekey && !opts.recovery => Err(RotateError::InvalidOptions(format!(
            "this cluster unseals itself through its {} seal and has no unseal shares to rekey; `kubectl vault rotate --recovery` rotates its recovery keys, `kubectl vault rotate --only-root-token` its root token",
            current.seal
        ))),
        Target::Recovery if opts.root_token && !opts.rekey && current.lacks_recovery_keys() => {
            Err(RotateError::InvalidOptions(
                "this cluster has no recovery keys (initialized with --recovery-shares 0), and a root token generation needs them; run `kubectl vault rotate --recovery` first to create them".into(),
            ))
        }
        _ => Ok(()),
    }
}

/// The share count and threshold the rekey asks for: the options, else the
/// current ones; recovery keys that do not exist yet default to 5 and 3.
fn new_shape(current: &Credentials, opts: &RotateOptions) -> (u8, u8) {
    let (shares, threshold) = if current.lacks_recovery_keys() {
        (5, 3)
    } else {
        (current.key_shares, current.key_threshold)
    };
    (
        opts.key_shares.unwrap_or(shares),
        opts.key_threshold.unwrap_or(threshold),
    )
}

async fn preflight<N: VaultNode>(
    nodes: &[N],
    current: &Credentials,
    opts: &RotateOptions,
) -> Result<(), RotateError> {
    let (shares, threshold) = new_shape(current, opts);
    if shares == 0 || threshold == 0 || threshold > shares {
        return Err(RotateError::InvalidOptions(format!(
            "--key-threshold {threshold} must be between 1 and --key-shares {shares}"
        )));
    }
    let mut sealed = Vec::new();
    for node in nodes {
        let status = seal_status(node)
            .await
            .map_err(|source| RotateError::Node {
                step: "read the seal status",
                pod: node.name().to_owned(),
                source,
            })?;
        if status.sealed {
            sealed.push(node.name().to_owned());
        } else if status.threshold != u32::from(current.key_threshold)
            || status.shares != u32::from(current.key_shares)
        {
            return Err(RotateError::Mismatch {
                reason: format!(
                    "pod {} has {} shares with threshold {}, the stored generation {} has {} with threshold {}",
                    node.name(),
                    status.shares,
                    status.threshold,
                    current.generation,
                    current.key_shares,
                    current.key_threshold
                ),
            });
        }
    }
    if !sealed.is_empty() {
        return Err(RotateError::Sealed { pods: sealed });
    }
    Ok(())
}

async fn rekey<N: VaultNode>(
    session: &Session<'_, N>,
    store: &impl CredentialStore,
    current: &Credentials,
    opts: &RotateOptions,
) -> Result<Credentials, RotateError> {
    let (shares, threshold) = new_shape(current, opts);
    tracing::info!(
        pod = session.node.name(),
        shares,
        threshold,
        api = session.api.name(session.target),
        "starting the rekey"
    );
    let (keys, verification_nonce) = session
        .rekey_with(current.authorising_keys(), shares, threshold)
        .await?
        .ok_or_else(|| RotateError::SharesRejected {
            reason: "the rekey did not complete with the stored shares".into(),
        })?;
    fail::fail_point!("rotate::after_update");
    let next = next_generation(current, keys, shares, threshold, opts.keep_generations);
    tracing::info!(
        generation = next.generation,
        "new keys issued, not active until verified"
    );
    let checkpoint = Checkpoint::new(
        &opts.holder,
        Phase::RotatePending {
            previous: current.clone(),
            next: next.clone(),
            verification_nonce: verification_nonce.clone(),
        },
    );
    if let Err(source) = persist(store, Record::Checkpoint(&checkpoint), opts.budget).await {
        // Not verified: the old shares stay the only active ones. Drop the rekey.
        let _ = session.cancel_rekey().await;
        return Err(RotateError::Store {
            object: store.checkpoint_object(),
            source,
        });
    }
    fail::fail_point!("rotate::after_checkpoint");
    session.verify(&next, &verification_nonce, 0).await?;
    tracing::info!(
        pod = session.node.name(),
        generation = next.generation,
        "new shares verified and active"
    );
    fail::fail_point!("rotate::after_verify");
    finish_rekey(store, &next, opts).await?;
    Ok(next)
}

async fn resume_rekey<N: VaultNode>(
    session: &Session<'_, N>,
    store: &impl CredentialStore,
    previous: &Credentials,
    next: &Credentials,
    verification_nonce: &str,
    opts: &RotateOptions,
) -> Result<Credentials, RotateError> {
    tracing::info!(checkpoint = %store.checkpoint_object(), "resuming an interrupted rotate");
    if let Some((nonce, progress)) = session.verification().await? {
        if nonce == verification_nonce {
            session.verify(next, verification_nonce, progress).await?;
            fail::fail_point!("rotate::after_verify");
            finish_rekey(store, next, opts).await?;
            return Ok(next.clone());
        }
    }
    // No verification in progress: either it completed, or the rekey was lost.
    if session.accepts(next).await? {
        tracing::info!(
            generation = next.generation,
            "the new shares were already verified"
        );
        finish_rekey(store, next, opts).await?;
        return Ok(next.clone());
    }
    if session.accepts(previous).await? {
        store
            .delete_checkpoint()
            .await
            .map_err(|source| RotateError::Store {
                object: store.checkpoint_object(),
                source,
            })?;
        return Err(RotateError::RekeyLost {
            generation: previous.generation,
        });
    }
    Err(RotateError::NoGenerationAccepted {
        checkpoint: store.checkpoint_object(),
    })
}

async fn finish_rekey(
    store: &impl CredentialStore,
    next: &Credentials,
    opts: &RotateOptions,
) -> Result<(), RotateError> {
    persist(store, Record::Credentials(next), opts.budget)
        .await
        .map_err(|source| RotateError::Store {
            object: store.credentials_object(),
            source,
        })?;
    fail::fail_point!("rotate::after_final_write");
    store
        .delete_checkpoint()
        .await
        .map_err(|source| RotateError::Store {
            object: store.checkpoint_object(),
            source,
        })
}

/// The document after a rekey: new shares, generation + 1, the old shares first in history.
fn next_generation(
    current: &Credentials,
    keys: Vec<Secret>,
    shares: u8,
    threshold: u8,
    keep: usize,
) -> Credentials {
    let (unseal_keys_b64, recovery_keys_b64) = if current.seal.is_auto() {
        (vec![], keys)
    } else {
        (keys, vec![])
    };
    let mut next = Credentials {
        unseal_keys_b64,
        recovery_keys_b64,
        key_shares: shares,
        key_threshold: threshold,
        // Above every number used: after a restore of an older generation the
        // current one is not the newest.
        generation: current.newest_generation() + 1,
        created_at: now_rfc3339(),
        history: current.history.clone(),
        ..current.clone()
    };
    next.push_history([current.retire()]);
    next.truncate_history(keep);
    next
}

#[cfg(test)]
mod tests {
    use super::root_token::decode_token;
    use super::session::Api;
    use super::*;
    use crate::ops::node::Request;
    use base64::Engine;
    use serde_json::{json, Value};

    /// Answers `sys/rekey/init` the way one server flavour does.
    struct RekeyProbe {
        without_token: u16,
        with_token: u16,
        token: &'static str,
    }

    impl VaultNode for RekeyProbe {
        fn name(&self) -> &str {
            "vault-0"
        }

        async fn call_secret(
            &self,
            req: Request<'_>,
        ) -> Result<crate::ops::secret::SecretAnswer, NodeError> {
            self.call(req).await.map(crate::ops::double::secret_answer)
        }

        async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
            assert_eq!(req.path, "sys/rekey/init");
            let status = match req.token {
                None => self.without_token,
                Some(t) => {
                    assert_eq!(t.expose(), self.token);
                    self.with_token
                }
            };
            match status {
                200 => Ok(json!({"started": false})),
                status => Err(NodeError::Api {
                    status,
                    errors: vec!["denied".into()],
                }),
            }
        }
    }

    async fn detect(without_token: u16, with_token: u16) -> Result<Api, RotateError> {
        let node = RekeyProbe {
            without_token,
            with_token,
            token: "s.root",
        };
        detect_api(&node, &Secret::new("s.root")).await
    }

    #[tokio::test]
    async fn the_rekey_api_is_detected_by_405_and_by_403() {
        // Vault 1.x: tokenless legacy endpoints.
        assert_eq!(detect(200, 200).await.unwrap(), Api::Legacy);
        // OpenBao 2.x: no legacy endpoints at all.
        assert_eq!(detect(405, 405).await.unwrap(), Api::TokenOnly);
        // Vault 2.x without enable_unauthenticated_access: 403 without a token.
        let api = detect(403, 200).await.unwrap();
        assert_eq!(api, Api::LegacyWithToken);
        assert!(api.needs_token());
        assert_eq!(api.rekey(Target::Barrier, "init"), "sys/rekey/init");
        assert_eq!(
            api.rekey(Target::Recovery, "init"),
            "sys/rekey-recovery-key/init"
        );
        assert_eq!(
            Api::TokenOnly.rekey(Target::Recovery, "verify"),
            "sys/rotate/recovery/verify"
        );
        assert_eq!(api.generate_root("attempt"), "sys/generate-root/attempt");
        // A 403 that the token cannot lift is reported, not guessed around.
        assert!(matches!(
            detect(403, 403).await,
            Err(RotateError::Node {
                source: NodeError::Api { status: 403, .. },
                ..
            })
        ));
        assert!(matches!(
            detect(500, 200).await,
            Err(RotateError::Node { .. })
        ));
    }

    #[test]
    fn decodes_the_otp_encoded_token() {
        let otp = Secret::new("abcdef");
        let token = b"s.tok1";
        let xored: Vec<u8> = token
            .iter()
            .zip(otp.expose().as_bytes())
            .map(|(a, b)| a ^ b)
            .collect();
        let encoded = Secret::new(base64::engine::general_purpose::STANDARD_NO_PAD.encode(xored));
        assert_eq!(decode_token(&encoded, &otp).unwrap().expose(), "s.tok1");
        assert!(decode_token(&Secret::new("!!"), &otp).is_none());
    }

    #[test]
    fn next_generation_moves_the_old_shares_to_history() {
        let current = crate::ops::credentials::sample(3, 2);
        let next = next_generation(
            &current,
            vec![Secret::new("n1"), Secret::new("n2")],
            2,
            2,
            5,
        );
        assert_eq!(next.generation, 2);
        assert_eq!(next.history.len(), 1);
        assert_eq!(next.history[0].generation, 1);
        assert!(next.history[0].unseal_keys_b64[0].same_as(&current.unseal_keys_b64[0]));
        assert_eq!(
            next_generation(&next, vec![Secret::new("x")], 1, 1, 1)
                .history
                .len(),
            1
        );
    }
}
