//! The credential store seam and the durable-write contract on top of it.
//!
//! Owns [`CredentialStore`] (where credentials and checkpoints live is the
//! implementation's business: a Kubernetes Secret, a SOPS envelope, a file)
//! and [`persist`], the one way the operations write: retry with backoff
//! inside a budget, then read back and compare.

use crate::ops::checkpoint::Checkpoint;
use crate::ops::credentials::Credentials;
use std::future::Future;
use std::time::Duration;

/// Why the store could not do what was asked. Never carries secret values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    /// The object is encrypted and no key available here opens it.
    #[error("{object} is encrypted and cannot be opened here: {reason}")]
    Undecryptable { object: String, reason: String },
    /// Writing would store what this run could not read back and check.
    #[error("refusing to write {object}: {reason}")]
    Unverifiable { object: String, reason: String },
    #[error("not allowed to {verb} {object}: {reason}")]
    Forbidden {
        object: String,
        verb: &'static str,
        reason: String,
    },
    #[error("{object} changed while it was being written (conflict)")]
    Conflict { object: String },
    /// Someone else wrote the object since this run read it: the write would
    /// overwrite their work, so it was not made.
    #[error("{object} was changed by another run since this one read it; nothing was overwritten. Check `kubectl vault status`, then re-run")]
    Superseded { object: String },
    /// The write would change who can decrypt the stored keys, unasked.
    #[error("{object} is encrypted for [{recorded}] and this run would encrypt it for [{requested}]; changing who can read the keys needs --age-recipient with the complete new set and --yes (SOPS_AGE_RECIPIENTS applies only to documents not yet encrypted)")]
    RecipientsPinned {
        object: String,
        recorded: String,
        requested: String,
    },
    /// This run no longer holds the workload's Lease.
    #[error("not writing {object}: {reason}")]
    Fenced { object: String, reason: String },
    #[error("could not {verb} {object}: {reason}")]
    Unavailable {
        object: String,
        verb: &'static str,
        reason: String,
    },
}

impl StoreError {
    /// Worth another attempt within the budget.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Unavailable { .. }
        )
    }
}

/// Where credentials and checkpoints live.
pub trait CredentialStore: Send + Sync {
    /// The credentials object, as users name it (`Secret vault/openbao-unseal`).
    fn credentials_object(&self) -> String;
    /// The checkpoint object.
    fn checkpoint_object(&self) -> String;

    fn load_credentials(
        &self,
    ) -> impl Future<Output = Result<Option<Credentials>, StoreError>> + Send;
    fn save_credentials(
        &self,
        credentials: &Credentials,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn load_checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StoreError>> + Send;
    fn save_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete_checkpoint(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How hard [`persist`] tries before it gives up.
#[derive(Clone, Copy, Debug)]
pub struct RetryBudget {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            attempts: 8,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// What [`persist`] writes.
pub enum Record<'a> {
    Checkpoint(&'a Checkpoint),
    Credentials(&'a Credentials),
}

/// Writes `record`, reads it back and compares, retrying transient failures
/// with exponential backoff until the budget is spent.
///
/// # Guarantees
/// On `Ok`, a fresh read returned exactly what was written.
///
/// # Caveats
/// On `Err` the object may or may not hold the record; callers that hold
/// secrets the store did not take must keep them somewhere else.
pub async fn persist(
    store: &impl CredentialStore,
    record: Record<'_>,
    budget: RetryBudget,
) -> Result<(), StoreError> {
    let mut backoff = budget.first_backoff;
    let mut attempt = 1;
    loop {
        let result = write_and_verify(store, &record).await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && attempt < budget.attempts => {
                tracing::warn!(attempt, error = %e, "store write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(budget.max_backoff);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write_and_verify(
    store: &impl CredentialStore,
    record: &Record<'_>,
) -> Result<(), StoreError> {
    match record {
        Record::Checkpoint(c) => {
            store.save_checkpoint(c).await?;
            match store.load_checkpoint().await? {
                Some(back) if &back == *c => Ok(()),
                _ => Err(StoreError::Unavailable {
                    object: store.checkpoint_object(),
                    verb: "read back",
                    reason: "the stored checkpoint differs from what was written".into(),
                }),
            }
        }
        Record::Credentials(c) => {
            store.save_credentials(c).await?;
            match store.load_credentials().await? {
                Some(back) if back.same_secrets(c) => Ok(()),
                _ => Err(StoreError::Unavailable {
                    object: store.credentials_object(),
                    verb: "read back",
                    reason: "the stored credentials differ from what was written".into(),
                }),
            }
        }
    }
}
