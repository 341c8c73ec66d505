//! An in-memory [`StateStore`] for unit tests: claims and a versioned
//! document behind mutexes, with the same conflict answers as the real stores.

use crate::ops::dr::state::{DrState, EpochClaim, StateError, StateStore, StateVersion, Versioned};
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryState(
    pub Mutex<Option<DrState>>,
    pub Mutex<std::collections::BTreeMap<u64, EpochClaim>>,
);

impl StateStore for MemoryState {
    fn object(&self) -> String {
        "memory".into()
    }
    async fn claim(&self, claim: &EpochClaim) -> Result<(), StateError> {
        let mut claims = self.1.lock().unwrap();
        if claims.contains_key(&claim.epoch) {
            return Err(StateError::Conflict {
                object: self.object(),
            });
        }
        claims.insert(claim.epoch, claim.clone());
        Ok(())
    }
    async fn read_claim(&self, epoch: u64) -> Result<Option<EpochClaim>, StateError> {
        Ok(self.1.lock().unwrap().get(&epoch).cloned())
    }
    async fn load(&self) -> Result<Option<Versioned>, StateError> {
        Ok(self.0.lock().unwrap().clone().map(|state| Versioned {
            version: StateVersion {
                revision: state.revision,
                e_tag: None,
            },
            state,
        }))
    }
    async fn create(&self, state: &DrState) -> Result<Versioned, StateError> {
        let mut slot = self.0.lock().unwrap();
        if slot.is_some() {
            return Err(StateError::Conflict {
                object: self.object(),
            });
        }
        *slot = Some(state.clone());
        Ok(Versioned {
            state: state.clone(),
            version: StateVersion {
                revision: state.revision,
                e_tag: None,
            },
        })
    }
    async fn update(
        &self,
        state: &DrState,
        expected: &StateVersion,
    ) -> Result<Versioned, StateError> {
        let mut slot = self.0.lock().unwrap();
        match slot.as_ref() {
            Some(s) if s.revision == expected.revision => {}
            _ => {
                return Err(StateError::Conflict {
                    object: self.object(),
                })
            }
        }
        *slot = Some(state.clone());
        Ok(Versioned {
            state: state.clone(),
            version: StateVersion {
                revision: state.revision,
                e_tag: None,
            },
        })
    }
}
