//! The rekey and root-generation endpoints each server flavour offers, and
//! one session against the active node that speaks them.

use crate::ops::credentials::Credentials;
use crate::ops::node::{NodeError, Request, VaultNode};
use crate::ops::secret::{key_body, Secret, SecretBytes};
use serde_json::{json, Value};

use super::{RotateError, Target};
/// Which endpoints this server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Api {
    /// Vault 1.x: tokenless `sys/rekey/*` and `sys/generate-root/*`.
    Legacy,
    /// Vault 2.x without `enable_unauthenticated_access`: the same endpoints, with a token.
    LegacyWithToken,
    /// OpenBao 2.x: `sys/rotate/root/*` and `sys/generate-root-token/*` with a token.
    TokenOnly,
}

impl Api {
    pub(super) fn name(self, target: Target) -> &'static str {
        match (self, target) {
            (Api::Legacy | Api::LegacyWithToken, Target::Barrier) => "sys/rekey",
            (Api::Legacy | Api::LegacyWithToken, Target::Recovery) => "sys/rekey-recovery-key",
            (Api::TokenOnly, Target::Barrier) => "sys/rotate/root",
            (Api::TokenOnly, Target::Recovery) => "sys/rotate/recovery",
        }
    }

    pub(super) fn rekey(self, target: Target, op: &str) -> String {
        format!("{}/{op}", self.name(target))
    }

    pub(super) fn generate_root(self, op: &str) -> String {
        match self {
            Api::Legacy | Api::LegacyWithToken => format!("sys/generate-root/{op}"),
            Api::TokenOnly => format!("sys/generate-root-token/{op}"),
        }
    }

    pub(super) fn needs_token(self) -> bool {
        !matches!(self, Api::Legacy)
    }
}

/// A rekey's answer: its nonce and, once complete, the new shares and the
/// nonce their verification needs. Absent fields mean "not yet".
#[derive(serde::Deserialize)]
struct RekeyAnswer {
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    complete: bool,
    #[serde(default)]
    keys_base64: Vec<Secret>,
    #[serde(default)]
    verification_nonce: String,
}

/// Whether a multi-share operation (a verification, a root token
/// generation) is done; absent means not yet.
#[derive(serde::Deserialize)]
pub(super) struct Progress {
    #[serde(default)]
    pub(super) complete: bool,
    /// The root token generation's result, once complete.
    #[serde(default)]
    pub(super) encoded_token: Option<Secret>,
}

/// One leader, its credentials and the API it speaks.
pub(super) struct Session<'a, N: VaultNode> {
    pub(super) node: &'a N,
    pub(super) api: Api,
    pub(super) target: Target,
    pub(super) token: Secret,
}

impl<N: VaultNode> Session<'_, N> {
    pub(super) async fn call(
        &self,
        step: &'static str,
        method: crate::ops::node::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, RotateError> {
        let body = body
            .map(|b| SecretBytes::json(&b))
            .transpose()
            .map_err(|e| RotateError::InvalidOptions(e.to_string()))?;
        self.node
            .call(self.request(method, path, body))
            .await
            .map_err(|source| self.failed(step, source))
    }

    /// Submits one share (and the operation's nonce) to `path`, and parses
    /// the answer, which may carry new shares or an encoded token, straight
    /// into `T`: neither the share nor the answer passes through a `Value`.
    pub(super) async fn submit<T: serde::de::DeserializeOwned>(
        &self,
        step: &'static str,
        path: &str,
        share: &Secret,
        nonce: &str,
    ) -> Result<T, RotateError> {
        let body =
            key_body(share, Some(nonce)).map_err(|e| RotateError::InvalidOptions(e.to_string()))?;
        self.secret_answer(step, crate::ops::node::Method::Write, path, Some(body))
            .await
    }

    /// A request whose answer carries secrets, parsed straight into `T`.
    pub(super) async fn secret_answer<T: serde::de::DeserializeOwned>(
        &self,
        step: &'static str,
        method: crate::ops::node::Method,
        path: &str,
        body: Option<SecretBytes>,
    ) -> Result<T, RotateError> {
        let answer = self
            .node
            .call_secret(self.request(method, path, body))
            .await
            .map_err(|source| self.failed(step, source))?;
        answer.parse().map_err(|e| {
            self.failed(
                step,
                NodeError::Malformed(format!(
                    "{path} answered something unexpected (line {} column {})",
                    e.line(),
                    e.column()
                )),
            )
        })
    }

    fn request<'r>(
        &'r self,
        method: crate::ops::node::Method,
        path: &'r str,
        body: Option<SecretBytes>,
    ) -> Request<'r> {
        let mut req = Request {
            method,
            path,
            body,
            token: None,
        };
        if self.api.needs_token() || path.starts_with("auth/") {
            req.token = Some(&self.token);
        }
        req
    }

    fn failed(&self, step: &'static str, source: NodeError) -> RotateError {
        RotateError::Node {
            step,
            pod: self.node.name().to_owned(),
            source,
        }
    }

    pub(super) async fn cancel_rekey(&self) -> Result<(), RotateError> {
        match self
            .call(
                "cancel a stale rekey",
                crate::ops::node::Method::Delete,
                &self.api.rekey(self.target, "init"),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(RotateError::Node {
                source: NodeError::Api {
                    status: 400 | 404, ..
                },
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Starts a rekey and submits `shares`; returns (new shares, verification nonce).
    /// `Ok(None)` when the server refused the shares (the rekey is cancelled).
    pub(super) async fn rekey_with(
        &self,
        shares: &[Secret],
        new_shares: u8,
        new_threshold: u8,
    ) -> Result<Option<(Vec<Secret>, String)>, RotateError> {
        self.cancel_rekey().await?;
        let body = SecretBytes::json(&json!({ "secret_shares": new_shares, "secret_threshold": new_threshold, "require_verification": true }))
            .map_err(|e| RotateError::InvalidOptions(e.to_string()))?;
        let started: RekeyAnswer = self
            .secret_answer(
                "start the rekey",
                crate::ops::node::Method::Write,
                &self.api.rekey(self.target, "init"),
                Some(body),
            )
            .await?;
        // A cluster without recovery keys answers the init with the new keys
        // at once (no share to submit); a cluster with keys never does.
        if started.complete != shares.is_empty() {
            self.cancel_rekey().await?;
            return Ok(None);
        }
        let nonce = started.nonce.clone();
        let mut last = started;
        for share in shares {
            match self
                .submit(
                    "submit a share to the rekey",
                    &self.api.rekey(self.target, "update"),
                    share,
                    &nonce,
                )
                .await
            {
                Ok(answer) => last = answer,
                Err(RotateError::Node {
                    source: NodeError::Api { status: 400, .. },
                    ..
                }) => {
                    self.cancel_rekey().await?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            if last.complete {
                break;
            }
        }
        if last.keys_base64.is_empty() || last.verification_nonce.is_empty() {
            self.cancel_rekey().await?;
            return Ok(None);
        }
        Ok(Some((last.keys_base64, last.verification_nonce)))
    }

    /// Does the barrier accept these shares? Runs a rekey with them and
    /// cancels it before verification, so nothing changes.
    pub(super) async fn accepts(&self, credentials: &Credentials) -> Result<bool, RotateError> {
        let accepted = self
            .rekey_with(
                credentials.authorising_keys(),
                credentials.key_shares,
                credentials.key_threshold,
            )
            .await?
            .is_some();
        self.cancel_rekey().await?;
        Ok(accepted)
    }

    /// The verification in progress: its nonce and progress, if any.
    pub(super) async fn verification(&self) -> Result<Option<(String, u64)>, RotateError> {
        match self
            .call(
                "read the rekey verification",
                crate::ops::node::Method::Read,
                &self.api.rekey(self.target, "verify"),
                None,
            )
            .await
        {
            Ok(v) if v.get("started").and_then(Value::as_bool) == Some(true) => Ok(Some((
                v.get("nonce")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                v.get("progress").and_then(Value::as_u64).unwrap_or(0),
            ))),
            Ok(_)
            | Err(RotateError::Node {
                source: NodeError::Api {
                    status: 400 | 404, ..
                },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn verify(
        &self,
        next: &Credentials,
        nonce: &str,
        progress: u64,
    ) -> Result<(), RotateError> {
        let skip = usize::try_from(progress).unwrap_or(0);
        let mut submitted = skip;
        for share in next.authorising_keys().iter().skip(skip) {
            submitted += 1;
            let answer: Progress = self
                .submit(
                    "verify the new shares",
                    &self.api.rekey(self.target, "verify"),
                    share,
                    nonce,
                )
                .await?;
            if answer.complete {
                return Ok(());
            }
        }
        Err(RotateError::VerifyIncomplete {
            pod: self.node.name().to_owned(),
            submitted,
        })
    }
}

/// Whether `candidate`'s shares are the cluster's current ones, asked of the
/// active node `leader` without changing anything: a rekey is started with
/// them (verification required) and cancelled before any verification, so
/// the current shares stay current either way. `token` must be one the
/// cluster accepts (OpenBao's rekey endpoints need it).
pub async fn probe_shares<N: VaultNode>(
    leader: &N,
    token: &Secret,
    candidate: &Credentials,
) -> Result<bool, RotateError> {
    let api = detect_api(leader, token).await?;
    let session = Session {
        node: leader,
        api,
        target: Target::of(candidate),
        token: token.clone(),
    };
    session.accepts(candidate).await
}

/// Picks the endpoints by asking the legacy path without a token: OpenBao
/// answers 405 (it has only `sys/rotate/root`); Vault 2.x answers 403 unless
/// `enable_unauthenticated_access` lists rekey, and then takes the same path
/// with a token.
pub(super) async fn detect_api(node: &impl VaultNode, token: &Secret) -> Result<Api, RotateError> {
    let failed = |source| RotateError::Node {
        step: "detect the rekey API",
        pod: node.name().to_owned(),
        source,
    };
    match node.call(Request::read("sys/rekey/init")).await {
        Ok(_) => Ok(Api::Legacy),
        Err(NodeError::Api { status: 405, .. }) => Ok(Api::TokenOnly),
        Err(NodeError::Api { status: 403, .. }) => {
            match node
                .call(Request::read("sys/rekey/init").with_token(token))
                .await
            {
                Ok(_) => Ok(Api::LegacyWithToken),
                Err(NodeError::Api { status: 405, .. }) => Ok(Api::TokenOnly),
                Err(source) => Err(failed(source)),
            }
        }
        Err(source) => Err(failed(source)),
    }
}
