//! Writing a restore's (or a recover's) checkpoint within its retry
//! budget, and the error when it cannot be written.

use super::RestoreError;
use crate::ops::checkpoint::Checkpoint;
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};

pub(crate) async fn save_checkpoint<E>(
    store: &impl CredentialStore,
    checkpoint: &Checkpoint,
    budget: RetryBudget,
) -> Result<(), E>
where
    E: From<CheckpointWriteError>,
{
    persist(store, Record::Checkpoint(checkpoint), budget)
        .await
        .map_err(|source| {
            E::from(CheckpointWriteError {
                object: store.checkpoint_object(),
                source,
            })
        })
}

/// A checkpoint write that failed within its budget.
#[derive(Debug)]
pub struct CheckpointWriteError {
    pub object: String,
    pub source: StoreError,
}

impl From<CheckpointWriteError> for RestoreError {
    fn from(e: CheckpointWriteError) -> Self {
        RestoreError::Checkpoint {
            object: e.object,
            source: e.source,
        }
    }
}
