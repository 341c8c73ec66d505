//! The stored credentials' state in the status: which generation, which
//! seal, how many shares and recovery keys, and the checkpoint of an
//! unfinished operation with the command that resumes it. Never a secret.

use crate::ops::store::CredentialStore;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct CredentialsState {
    pub object: String,
    pub present: bool,
    pub generation: Option<u32>,
    pub key_shares: Option<u8>,
    pub key_threshold: Option<u8>,
    /// The seal the stored document is for (`shamir`, `static`, ...).
    pub seal: Option<String>,
    /// How many recovery keys are stored (auto-unseal clusters; 0: none).
    pub recovery_keys: Option<usize>,
    pub error: Option<String>,
    pub checkpoint: Option<CheckpointState>,
}

#[derive(Debug, Serialize)]
pub struct CheckpointState {
    pub object: String,
    pub phase: Option<String>,
    pub holder: Option<String>,
    pub resume_command: Option<String>,
    pub error: Option<String>,
}

pub(super) fn credentials_state(
    store: &impl CredentialStore,
    credentials: Result<
        Option<crate::ops::credentials::Credentials>,
        crate::ops::store::StoreError,
    >,
    checkpoint: Result<Option<crate::ops::checkpoint::Checkpoint>, crate::ops::store::StoreError>,
) -> CredentialsState {
    let checkpoint = match checkpoint {
        Ok(None) => None,
        Ok(Some(cp)) => Some(CheckpointState {
            object: store.checkpoint_object(),
            phase: serde_json::to_value(&cp.phase)
                .ok()
                .and_then(|v| v.get("phase").and_then(|p| p.as_str().map(str::to_owned))),
            holder: Some(cp.holder.clone()),
            resume_command: Some(cp.resume_command().to_owned()),
            error: None,
        }),
        Err(e) => Some(CheckpointState {
            object: store.checkpoint_object(),
            phase: None,
            holder: None,
            resume_command: None,
            error: Some(e.to_string()),
        }),
    };
    let (seal, recovery_keys) = match &credentials {
        Ok(Some(c)) => (
            Some(c.seal.name().to_owned()),
            c.seal.is_auto().then_some(c.recovery_keys_b64.len()),
        ),
        _ => (None, None),
    };
    let (present, generation, key_shares, key_threshold, error) = match credentials {
        Ok(Some(c)) => (
            true,
            Some(c.generation),
            Some(c.key_shares),
            Some(c.key_threshold),
            None,
        ),
        Ok(None) => (false, None, None, None, None),
        Err(e) => (false, None, None, None, Some(e.to_string())),
    };
    CredentialsState {
        object: store.credentials_object(),
        present,
        generation,
        key_shares,
        key_threshold,
        seal,
        recovery_keys,
        error,
        checkpoint,
    }
}
