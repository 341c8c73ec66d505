//! Which operation owns the checkpoint, and the one `claim` every command
//! goes through before it touches the cluster or the stores.
//!
//! Owns the answer to "whose checkpoint is this?" and "may I go on?". What
//! each operation does with its own checkpoint is the operation's business.
//!
//! # Guarantees
//! A command resumes only a checkpoint of its own [`Operation`]. Any other
//! checkpoint is a refusal that names the operation and its resume command,
//! so no command finishes, overwrites or deletes another operation's
//! checkpoint (which may hold the only copy of new key material).

use crate::ops::checkpoint::{Checkpoint, Phase};
use std::fmt;

/// A stateful operation that can leave a checkpoint behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Init,
    /// A rekey, a root token rotation, or both.
    Rotate,
    Restore,
    Recover,
    /// File storage to raft, or a one-node raft cluster growing.
    Migrate,
    /// `dr sync` into this standby, past its restore.
    DrSync,
}

impl Operation {
    /// The command that resumes it.
    pub fn resume_command(self) -> &'static str {
        match self {
            Operation::Init => "kubectl vault init",
            Operation::Rotate => "kubectl vault rotate",
            Operation::Restore => "kubectl vault snapshot restore",
            Operation::Recover => "kubectl vault recover",
            Operation::Migrate => "kubectl vault migrate --to raft",
            Operation::DrSync => "kubectl vault dr sync",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Init => "init",
            Operation::Rotate => "rotate",
            Operation::Restore => "snapshot restore",
            Operation::Recover => "recover",
            Operation::Migrate => "migrate",
            Operation::DrSync => "dr sync",
        })
    }
}

impl Phase {
    /// The operation this phase belongs to.
    pub fn operation(&self) -> Operation {
        match self {
            Phase::InitPending { .. } | Phase::InitKeysStored { .. } => Operation::Init,
            Phase::RotatePending { .. } | Phase::RootTokenPending { .. } => Operation::Rotate,
            Phase::RestorePending { .. } | Phase::RestoreApplied { recover: false, .. } => {
                Operation::Restore
            }
            Phase::RecoverPending { .. }
            | Phase::RecoverTempInit { .. }
            | Phase::RestoreApplied { recover: true, .. } => Operation::Recover,
            Phase::MigratePending { .. } | Phase::AwaitingRaftValues { .. } => Operation::Migrate,
            Phase::DrSynced { .. } => Operation::DrSync,
        }
    }
}

/// What a command may do, given the checkpoint it found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim<'a> {
    /// No operation is in flight.
    Free,
    /// This command's own operation was interrupted here; resume it.
    Resume(&'a Checkpoint),
    /// Another operation is in flight: refuse, and name it.
    Busy(&'a Checkpoint),
}

/// Decides whether `mine` may run with `checkpoint` in place.
pub fn claim(checkpoint: Option<&Checkpoint>, mine: Operation) -> Claim<'_> {
    match checkpoint {
        None => Claim::Free,
        Some(c) if c.phase.operation() == mine => Claim::Resume(c),
        Some(c) => Claim::Busy(c),
    }
}

/// The refusal a command gives when [`claim`] answers [`Claim::Busy`].
#[derive(Debug, thiserror::Error)]
#[error("{checkpoint} holds an interrupted {operation}; finish it with `{resume}` first (`kubectl vault checkpoint show` shows what it holds)")]
pub struct OtherOperation {
    pub checkpoint: String,
    pub operation: Operation,
    /// The command that finishes it, as the user would type it.
    pub resume: String,
}

impl OtherOperation {
    /// The refusal for `found`, kept in the object named `checkpoint`.
    pub fn new(checkpoint: String, found: &Checkpoint) -> Self {
        OtherOperation {
            checkpoint,
            operation: found.operation(),
            resume: found.resume_command(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::checkpoint::SnapshotRef;

    fn checkpoint(phase: Phase) -> Checkpoint {
        Checkpoint::new("test", phase)
    }

    #[test]
    fn a_command_resumes_only_its_own_operation() {
        let init = checkpoint(Phase::InitPending {
            key_shares: 5,
            key_threshold: 3,
            pod: None,
        });
        let restore = checkpoint(Phase::RestoreApplied {
            snapshot: SnapshotRef {
                location: "/x".into(),
                name: "a.snap".into(),
                sha256: "00".into(),
                generation: 1,
            },
            recover: false,
        });
        assert_eq!(claim(None, Operation::Init), Claim::Free);
        assert_eq!(claim(Some(&init), Operation::Init), Claim::Resume(&init));
        assert_eq!(claim(Some(&init), Operation::Rotate), Claim::Busy(&init));
        assert_eq!(
            claim(Some(&restore), Operation::Init),
            Claim::Busy(&restore)
        );
        assert_eq!(
            claim(Some(&restore), Operation::Recover),
            Claim::Busy(&restore)
        );
    }

    fn restore_of(location: &str, name: &str, recover: bool) -> Checkpoint {
        checkpoint(Phase::RestoreApplied {
            snapshot: SnapshotRef {
                location: location.into(),
                name: name.into(),
                sha256: "00".into(),
                generation: 1,
            },
            recover,
        })
    }

    /// The printed resume command runs as printed: it names the snapshot.
    #[test]
    fn restore_and_recover_resume_with_their_snapshot() {
        let cmd = |l, n, r| restore_of(l, n, r).resume_command();
        assert_eq!(
            cmd("/s/", "a.snap", false),
            "kubectl vault snapshot restore --from /s/ --snapshot a.snap"
        );
        assert_eq!(
            cmd("/s/a.snap", "a.snap", false),
            "kubectl vault snapshot restore --from /s/a.snap"
        );
        assert_eq!(
            cmd("s3://b/p/", "a.snap", false),
            "kubectl vault snapshot restore --from s3://b/p/ --snapshot a.snap"
        );
        assert_eq!(
            cmd("/my dir", "a.snap", true),
            "kubectl vault recover --from '/my dir/a.snap'"
        );
        assert_eq!(
            cmd("/s/a.snap", "a.snap", true),
            "kubectl vault recover --from /s/a.snap"
        );
        assert_eq!(
            cmd("s3://b/p/", "a.snap", true),
            "kubectl vault recover --from s3://b/p/"
        );
        assert_eq!(
            cmd("/it's", "a.snap", true),
            "kubectl vault recover --from '/it'\\''s/a.snap'"
        );
    }
}
