//! The root token rotation: the OTP flow with the current shares (or
//! recovery keys), stored through the checkpoint and proven before the old
//! token is revoked.

use crate::ops::checkpoint::{Checkpoint, Phase};
use crate::ops::credentials::Credentials;
use crate::ops::node::{NodeError, Request, VaultNode};
use crate::ops::secret::{Secret, SecretBytes};
use crate::ops::store::{persist, CredentialStore, Record};
use base64::Engine;
use serde_json::json;

use super::session::{Progress, Session};
use super::{RotateError, RotateOptions};
pub(super) async fn rotate_root_token<N: VaultNode>(
    session: &Session<'_, N>,
    store: &impl CredentialStore,
    current: &Credentials,
    opts: &RotateOptions,
) -> Result<(), RotateError> {
    use crate::ops::node::Method;
    match session
        .call(
            "cancel a stale root generation",
            Method::Delete,
            &session.api.generate_root("attempt"),
            None,
        )
        .await
    {
        Ok(_)
        | Err(RotateError::Node {
            source: NodeError::Api {
                status: 400 | 404, ..
            },
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    #[derive(serde::Deserialize)]
    struct Started {
        otp: Secret,
        nonce: String,
    }
    let body =
        SecretBytes::json(&json!({})).map_err(|e| RotateError::InvalidOptions(e.to_string()))?;
    let started: Started = session
        .secret_answer(
            "start a root token generation",
            Method::Write,
            &session.api.generate_root("attempt"),
            Some(body),
        )
        .await?;
    let mut encoded = None;
    for share in current.authorising_keys() {
        let answer: Progress = session
            .submit(
                "submit a share to the root token generation",
                &session.api.generate_root("update"),
                share,
                &started.nonce,
            )
            .await?;
        if answer.complete {
            encoded = answer.encoded_token;
            break;
        }
    }
    let encoded = encoded.ok_or_else(|| RotateError::SharesRejected {
        reason: "the root token generation did not complete".into(),
    })?;
    let token = decode_token(&encoded, &started.otp).ok_or_else(|| {
        RotateError::NewTokenRejected(NodeError::Malformed(
            "the encoded token does not decode with the OTP".into(),
        ))
    })?;
    fail::fail_point!("root::after_generate");
    // The old token stays in the history with its generation: a snapshot
    // taken before this rotation holds it, not the new one. After a rekey in
    // the same run the retired generation already carries it.
    let mut next = Credentials {
        root_token: token,
        ..current.clone()
    };
    let kept = current.history.iter().any(|g| {
        g.root_token
            .as_ref()
            .is_some_and(|t| t.same_as(&current.root_token))
    });
    if !kept {
        next.push_history([current.retire()]);
        next.truncate_history(opts.keep_generations.max(1));
    }
    let checkpoint = Checkpoint::new(
        &opts.holder,
        Phase::RootTokenPending {
            previous_root_token: current.root_token.clone(),
            next: next.clone(),
        },
    );
    persist(store, Record::Checkpoint(&checkpoint), opts.budget)
        .await
        .map_err(|source| RotateError::Store {
            object: store.checkpoint_object(),
            source,
        })?;
    fail::fail_point!("root::after_checkpoint");
    let new_session = Session {
        node: session.node,
        api: session.api,
        target: session.target,
        token: next.root_token.clone(),
    };
    finish_root_token(&new_session, store, &current.root_token, &next, opts).await
}

/// Proves the new token, stores it, then revokes the old one.
pub(super) async fn finish_root_token<N: VaultNode>(
    session: &Session<'_, N>,
    store: &impl CredentialStore,
    previous: &Secret,
    next: &Credentials,
    opts: &RotateOptions,
) -> Result<(), RotateError> {
    use crate::ops::node::Method;
    session
        .node
        .call(Request::read("auth/token/lookup-self").with_token(&next.root_token))
        .await
        .map_err(RotateError::NewTokenRejected)?;
    persist(store, Record::Credentials(next), opts.budget)
        .await
        .map_err(|source| RotateError::Store {
            object: store.credentials_object(),
            source,
        })?;
    fail::fail_point!("root::after_final_write");
    if !previous.same_as(&next.root_token) {
        let old = Session {
            node: session.node,
            api: session.api,
            target: session.target,
            token: previous.clone(),
        };
        match old
            .call(
                "revoke the old root token",
                Method::Write,
                "auth/token/revoke-self",
                Some(json!({})),
            )
            .await
        {
            Ok(_)
            | Err(RotateError::Node {
                source: NodeError::Api { status: 403, .. },
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    fail::fail_point!("root::after_revoke");
    store
        .delete_checkpoint()
        .await
        .map_err(|source| RotateError::Store {
            object: store.checkpoint_object(),
            source,
        })
}

/// The OTP flow's token: base64 of (token XOR otp).
pub(super) fn decode_token(encoded: &Secret, otp: &Secret) -> Option<Secret> {
    let text = encoded.expose().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .ok()?;
    if bytes.len() != otp.expose().len() {
        return None;
    }
    let token: Vec<u8> = bytes
        .iter()
        .zip(otp.expose().as_bytes())
        .map(|(a, b)| a ^ b)
        .collect();
    String::from_utf8(token).ok().map(Secret::new)
}
