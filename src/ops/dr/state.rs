//! The DR state: one small JSON document in the group's shared location,
//! which says who is primary, at which epoch, what each standby last
//! restored, which clusters are fenced, the last decision, and a failover
//! in progress.
//!
//! Owns its shape and the conditional-write discipline over the
//! [`StateStore`] seam (create-if-absent, update-if-version). Where the
//! document lives (a folder, a bucket) is the implementation's business.
//!
//! # Guarantees
//! - The epoch only grows: [`take_epoch`] is the one writer that raises it,
//!   with one conditional write from the version it read. Of two runs that
//!   read the same version, exactly one wins; the other learns the winner.
//! - Records (a standby's sync, a fence) go through [`record`], which
//!   re-reads and retries on a conflict and never lowers the epoch nor
//!   changes the primary.

use crate::ops::checkpoint::now_rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;

pub const STATE_SCHEMA: u32 = 1;
/// The object's name inside the snapshot location.
pub const STATE_OBJECT: &str = "dr-state.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrState {
    pub schema: u32,
    /// The DR group's `metadata.name`.
    pub group: String,
    pub primary: String,
    pub epoch: u64,
    /// Bumped by every write; the folder store compares it.
    pub revision: u64,
    pub updated_at: String,
    /// What each standby last restored, by cluster name.
    #[serde(default)]
    pub standbys: BTreeMap<String, StandbySync>,
    /// Clusters demoted by a failover, by name.
    #[serde(default)]
    pub fences: BTreeMap<String, Fence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverProgress>,
}

/// The snapshot a standby holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbySync {
    pub snapshot: String,
    /// The manifest's raft committed index, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_index: Option<u64>,
    /// When the snapshot was taken (manifest time).
    pub snapshot_time: String,
    /// When the restore into the standby finished.
    pub restored_at: String,
    /// The cluster the data came from.
    pub cluster_id: String,
    /// The primary it was taken from, and the epoch.
    pub primary: String,
    pub epoch: u64,
    /// Left unsealed (`--standby-unsealed`).
    #[serde(default)]
    pub unsealed: bool,
}

/// A cluster demoted at `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub epoch: u64,
    /// Sealed: every pod was sealed with its stored token. Recorded: it
    /// could not be reached; it stays fenced by this record.
    pub how: FenceKind,
    pub at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceKind {
    Sealed,
    Recorded,
}

/// Why a failover chose whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: String,
    pub epoch: u64,
    pub from: String,
    pub chosen: String,
    /// `--to NAME` (a person chose) or `auto` (the best score).
    pub by: String,
    pub scores: Vec<ScoreRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub name: String,
    pub score: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ineligible: Option<String>,
}

/// A failover that took its epoch and has not finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverProgress {
    pub epoch: u64,
    pub from: String,
    pub to: String,
    /// Who runs it (`kubectl-vault@host/pid`).
    pub holder: String,
    pub step: FailoverStep,
    pub updated_at: String,
}

/// The last failover step that finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverStep {
    /// The epoch is taken; nothing else is done.
    EpochTaken,
    /// The old primary is sealed, or its fence recorded.
    Fenced,
    /// The chosen standby holds the newest snapshot.
    CaughtUp,
}

impl DrState {
    /// The first state of `group` with `primary` at epoch 1.
    pub fn new(group: &str, primary: &str) -> DrState {
        DrState {
            schema: STATE_SCHEMA,
            group: group.to_owned(),
            primary: primary.to_owned(),
            epoch: 1,
            revision: 1,
            updated_at: now_rfc3339(),
            standbys: BTreeMap::new(),
            fences: BTreeMap::new(),
            decision: None,
            failover: None,
        }
    }
}

/// Which version of the object a conditional update expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateVersion {
    pub revision: u64,
    /// The object store's ETag, where it has one.
    pub e_tag: Option<String>,
}

/// Who took an epoch, written once, before the state names the failover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochClaim {
    pub epoch: u64,
    pub to: String,
    pub holder: String,
    pub at: String,
}

/// A state as read, with the version to update it from.
#[derive(Clone, Debug)]
pub struct Versioned {
    pub state: DrState,
    pub version: StateVersion,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Someone else wrote first; nothing was written.
    #[error("{object} was changed by another run since it was read")]
    Conflict { object: String },
    #[error("{object} is not a DR state document: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("could not {verb} {object}: {reason}")]
    Unavailable {
        object: String,
        verb: &'static str,
        reason: String,
    },
    #[error(
        "{object} belongs to DR group {found}, not {expected}; point spec.snapshots elsewhere"
    )]
    OtherGroup {
        object: String,
        found: String,
        expected: String,
    },
    #[error("{object} was changed by other runs {tries} times in a row; re-run")]
    Contended { object: String, tries: u32 },
}

/// Where the DR state lives.
pub trait StateStore: Send + Sync {
    /// The object, as people name it.
    fn object(&self) -> String;
    fn load(&self) -> impl Future<Output = Result<Option<Versioned>, StateError>> + Send;
    /// Writes `state` only when no object exists ([`StateError::Conflict`] else).
    fn create(&self, state: &DrState)
        -> impl Future<Output = Result<Versioned, StateError>> + Send;
    /// Creates the claim of `epoch` only when none exists
    /// ([`StateError::Conflict`] else): the create-only write that decides
    /// who takes an epoch, on any store that can create exclusively, even
    /// one that ignores If-Match on updates.
    fn claim(&self, claim: &EpochClaim) -> impl Future<Output = Result<(), StateError>> + Send;
    /// The claim of `epoch`, if one exists.
    fn read_claim(
        &self,
        epoch: u64,
    ) -> impl Future<Output = Result<Option<EpochClaim>, StateError>> + Send;
    /// Writes `state` only when the object is still at `expected`.
    fn update(
        &self,
        state: &DrState,
        expected: &StateVersion,
    ) -> impl Future<Output = Result<Versioned, StateError>> + Send;
}

/// The state, created from the file's roles when it does not exist yet.
pub async fn load_or_create(
    store: &impl StateStore,
    group: &str,
    initial_primary: &str,
) -> Result<Versioned, StateError> {
    for _ in 0..5 {
        if let Some(found) = store.load().await? {
            if found.state.group != group {
                return Err(StateError::OtherGroup {
                    object: store.object(),
                    found: found.state.group,
                    expected: group.to_owned(),
                });
            }
            return Ok(found);
        }
        match store.create(&DrState::new(group, initial_primary)).await {
            Ok(v) => return Ok(v),
            Err(StateError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StateError::Contended {
        object: store.object(),
        tries: 5,
    })
}

/// Applies `change` to the newest state and writes it conditionally,
/// re-reading and re-applying on a conflict (up to 10 times). `change`
/// returns false to write nothing. The epoch and the primary are kept as
/// the newest read has them whatever `change` does.
pub async fn record<F>(store: &impl StateStore, mut change: F) -> Result<Versioned, StateError>
where
    F: FnMut(&mut DrState) -> bool + Send,
{
    const TRIES: u32 = 10;
    for attempt in 0..TRIES {
        let Some(current) = store.load().await? else {
            return Err(StateError::Corrupt {
                object: store.object(),
                reason: "it vanished".into(),
            });
        };
        let mut next = current.state.clone();
        if !change(&mut next) {
            return Ok(current);
        }
        next.epoch = current.state.epoch;
        next.primary.clone_from(&current.state.primary);
        next.revision = current.state.revision + 1;
        next.updated_at = now_rfc3339();
        match store.update(&next, &current.version).await {
            Ok(v) => return Ok(v),
            Err(StateError::Conflict { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(
                    20 * u64::from(attempt + 1),
                ))
                .await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StateError::Contended {
        object: store.object(),
        tries: TRIES,
    })
}

/// What a lost epoch race tells the loser.
#[derive(Debug, thiserror::Error)]
#[error("another failover took epoch {epoch} first: {winner} is becoming primary (run by {holder}); nothing was changed")]
pub struct LostRace {
    pub epoch: u64,
    pub winner: String,
    pub holder: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TakeEpochError {
    #[error(transparent)]
    Lost(#[from] LostRace),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Takes epoch `seen.epoch + 1` for a failover from the current primary to
/// `to`.
///
/// # Expected flow
/// 1. Create the epoch's claim (create-only): of any number of runs, exactly
///    one creates it; the others lose and learn the winner from the claim.
///    A claim whose holder is gone (a crash between 1 and 2) is adopted
///    by a run of this host, with the claim's choice.
/// 2. Write the state naming the failover in progress, conditionally,
///    re-reading on a conflict (a sync's record may land in between); a
///    state already past `seen.epoch` means another run got further.
pub async fn take_epoch(
    store: &impl StateStore,
    seen: &Versioned,
    to: &str,
    holder: &str,
    decision: Decision,
) -> Result<Versioned, TakeEpochError> {
    let epoch = seen.state.epoch + 1;
    let mine = EpochClaim {
        epoch,
        to: to.to_owned(),
        holder: holder.to_owned(),
        at: now_rfc3339(),
    };
    let claim = match store.claim(&mine).await {
        Ok(()) => mine,
        Err(StateError::Conflict { .. }) => {
            let found = store.read_claim(epoch).await?;
            match found {
                Some(c) if c.holder != holder && crate::ops::dr::holder_gone(&c.holder) => {
                    tracing::warn!(epoch, to = %c.to, holder = %c.holder, "adopting the epoch claim of a run that is gone");
                    EpochClaim {
                        holder: holder.to_owned(),
                        ..c
                    }
                }
                Some(c) => {
                    return Err(LostRace {
                        epoch,
                        winner: c.to,
                        holder: c.holder,
                    }
                    .into())
                }
                None => {
                    return Err(LostRace {
                        epoch,
                        winner: "?".into(),
                        holder: "?".into(),
                    }
                    .into())
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    let mut current = seen.clone();
    for attempt in 0..10u64 {
        if current.state.epoch != seen.state.epoch {
            let (winner, holder) = match &current.state.failover {
                Some(f) => (f.to.clone(), f.holder.clone()),
                None => (current.state.primary.clone(), "another run".to_owned()),
            };
            return Err(LostRace {
                epoch: current.state.epoch,
                winner,
                holder,
            }
            .into());
        }
        let mut next = current.state.clone();
        next.epoch = epoch;
        next.revision = current.state.revision + 1;
        next.updated_at = now_rfc3339();
        next.decision = Some(Decision {
            epoch,
            chosen: claim.to.clone(),
            ..decision.clone()
        });
        next.failover = Some(FailoverProgress {
            epoch,
            from: current.state.primary.clone(),
            to: claim.to.clone(),
            holder: claim.holder.clone(),
            step: FailoverStep::EpochTaken,
            updated_at: next.updated_at.clone(),
        });
        match store.update(&next, &current.version).await {
            Ok(v) => return Ok(v),
            Err(StateError::Conflict { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt + 1))).await;
                current = store.load().await?.ok_or_else(|| StateError::Corrupt {
                    object: store.object(),
                    reason: "it vanished".into(),
                })?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StateError::Contended {
        object: store.object(),
        tries: 10,
    }
    .into())
}

/// Advances the failover of `epoch` to `step`; the one that finishes it
/// (`None`) makes `to` the primary and clears the progress. Refuses (as a
/// conflict) when another failover has taken a newer epoch since.
pub async fn advance(
    store: &impl StateStore,
    epoch: u64,
    step: Option<FailoverStep>,
    extra: impl Fn(&mut DrState) + Send + Sync,
) -> Result<Versioned, StateError> {
    for attempt in 0..10u64 {
        let current = store.load().await?.ok_or_else(|| StateError::Corrupt {
            object: store.object(),
            reason: "it vanished".into(),
        })?;
        let mut next = current.state.clone();
        let Some(progress) = next.failover.as_mut().filter(|f| f.epoch == epoch) else {
            return Err(StateError::Conflict {
                object: store.object(),
            });
        };
        match step {
            Some(step) => {
                progress.step = step;
                progress.updated_at = now_rfc3339();
            }
            None => {
                next.primary = progress.to.clone();
                next.failover = None;
            }
        }
        extra(&mut next);
        next.revision = current.state.revision + 1;
        next.updated_at = now_rfc3339();
        match store.update(&next, &current.version).await {
            Ok(v) => return Ok(v),
            Err(StateError::Conflict { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt + 1))).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StateError::Contended {
        object: store.object(),
        tries: 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dr::memory::MemoryState;

    fn decision() -> Decision {
        Decision {
            at: now_rfc3339(),
            epoch: 0,
            from: "east".into(),
            chosen: "west".into(),
            by: "auto".into(),
            scores: vec![],
        }
    }

    #[tokio::test]
    async fn of_two_runs_that_read_the_same_state_exactly_one_takes_the_epoch() {
        let store = MemoryState::default();
        let seen = load_or_create(&store, "prod", "east").await.unwrap();
        assert_eq!(seen.state.epoch, 1);
        let won = take_epoch(&store, &seen, "west", "a/1", decision())
            .await
            .unwrap();
        assert_eq!(won.state.epoch, 2);
        let lost = take_epoch(&store, &seen, "north", "b/2", decision())
            .await
            .unwrap_err();
        let TakeEpochError::Lost(lost) = lost else {
            panic!("{lost}")
        };
        assert_eq!((lost.epoch, lost.winner.as_str()), (2, "west"));
        assert!(lost.to_string().contains("west"), "{lost}");
    }

    #[tokio::test]
    async fn records_retry_but_never_move_the_epoch_or_primary() {
        let store = MemoryState::default();
        let seen = load_or_create(&store, "prod", "east").await.unwrap();
        take_epoch(&store, &seen, "west", "a/1", decision())
            .await
            .unwrap();
        let v = record(&store, |s| {
            s.epoch = 0;
            s.primary = "evil".into();
            s.fences.insert(
                "east".into(),
                Fence {
                    epoch: 2,
                    how: FenceKind::Recorded,
                    at: "t".into(),
                },
            );
            true
        })
        .await
        .unwrap();
        assert_eq!((v.state.epoch, v.state.primary.as_str()), (2, "east"));
        assert!(v.state.fences.contains_key("east"));
        let done = advance(&store, 2, None, |_| {}).await.unwrap();
        assert_eq!(done.state.primary, "west");
        assert!(done.state.failover.is_none());
        assert!(matches!(
            advance(&store, 2, Some(FailoverStep::Fenced), |_| {}).await,
            Err(StateError::Conflict { .. })
        ));
    }

    /// A crash between the claim and the state write: a run of this host
    /// adopts the gone holder's claim, with its choice.
    #[tokio::test]
    async fn the_claim_of_a_gone_run_is_adopted_with_its_choice() {
        let store = MemoryState::default();
        let seen = load_or_create(&store, "prod", "east").await.unwrap();
        let me = crate::cmd::holder_identity();
        let host = me.rsplit_once('/').unwrap().0;
        store
            .claim(&EpochClaim {
                epoch: 2,
                to: "north".into(),
                holder: format!("{host}/99999999"),
                at: "t".into(),
            })
            .await
            .unwrap();
        let v = take_epoch(&store, &seen, "west", &me, decision())
            .await
            .unwrap();
        let f = v.state.failover.unwrap();
        assert_eq!(
            (f.epoch, f.to.as_str(), f.holder.as_str()),
            (2, "north", me.as_str())
        );
        // A live holder's claim is not adopted.
        let seen = store.load().await.unwrap().unwrap();
        store
            .claim(&EpochClaim {
                epoch: 3,
                to: "east".into(),
                holder: "kubectl-vault@elsewhere/1".into(),
                at: "t".into(),
            })
            .await
            .unwrap();
        let lost = take_epoch(&store, &seen, "west", &me, decision())
            .await
            .unwrap_err();
        assert!(
            lost.to_string().contains("east is becoming primary"),
            "{lost}"
        );
    }

    #[tokio::test]
    async fn a_state_of_another_group_is_refused() {
        let store = MemoryState::default();
        load_or_create(&store, "prod", "east").await.unwrap();
        let e = load_or_create(&store, "test", "east").await.unwrap_err();
        assert!(e.to_string().contains("DR group prod, not test"), "{e}");
    }
}
