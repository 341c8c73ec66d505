//! Checkpoints: the durable record of a stateful operation in flight.
//!
//! Owns the typed, versioned shape of what an interrupted `init` leaves behind
//! so that a re-run can resume. A checkpoint is written before the step it
//! protects and deleted only after the final credentials are stored.

use crate::ops::credentials::Credentials;
use serde::{Deserialize, Serialize};

/// The schema this build writes and reads.
pub const CHECKPOINT_SCHEMA: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    pub schema: u32,
    /// Who wrote it (host and process), for the operator reading `status`.
    pub holder: String,
    pub updated_at: String,
    pub phase: Phase,
}

/// Where the interrupted operation stood.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Preflight passed; `sys/init` may or may not have been called, on `pod`.
    InitPending {
        key_shares: u8,
        key_threshold: u8,
        /// The pod `sys/init` goes to (absent in checkpoints of older releases).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<String>,
    },
    /// `sys/init` answered and its response is here; pods may still be sealed.
    InitKeysStored { credentials: Credentials },
    /// A rekey's new shares, not yet verified: `previous` unseals until the
    /// verification completes, `next` after it. `next` is the final document.
    RotatePending {
        previous: Credentials,
        next: Credentials,
        verification_nonce: String,
    },
    /// A new root token that works and is stored here; the old one may not be
    /// revoked yet. `next` is the final document.
    RootTokenPending {
        previous_root_token: crate::ops::secret::Secret,
        next: Credentials,
    },
    /// `snapshot restore`: the snapshot may or may not have been applied.
    RestorePending { snapshot: SnapshotRef },
    /// `recover`: preflight passed; pod 0 may or may not carry a temporary init.
    RecoverPending { snapshot: SnapshotRef },
    /// `recover`: pod 0 carries a throwaway init whose keys are kept
    /// here until the restore replaces its data; they protect nothing else.
    RecoverTempInit {
        snapshot: SnapshotRef,
        temporary: Credentials,
    },
    /// `snapshot restore` or `recover`: the snapshot is applied; pods need the
    /// shares of `snapshot.generation`.
    RestoreApplied {
        snapshot: SnapshotRef,
        recover: bool,
    },
    /// `migrate` phase 1: the backup is verified; the pod may be sealed and
    /// a raft copy may sit, complete or not, beside the file data.
    MigratePending { migration: Migration },
    /// `migrate` phase 1 is done: the raft copy holds every key and the pod
    /// serves file storage again until the raft values are applied.
    AwaitingRaftValues { migration: Migration },
    /// `dr sync`: the primary's snapshot is restored into this standby and
    /// its credentials stored; sealing it and recording the sync in the DR
    /// state remain.
    DrSynced {
        snapshot: SnapshotRef,
        /// The DR group member this cluster is, and the primary it follows.
        standby: String,
        primary: String,
        epoch: u64,
        /// The DR group file the sync ran with, for the resume hint
        /// (absent in checkpoints written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<String>,
    },
}

/// What a file → raft migrate carries from phase 1 to phase 2.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Migration {
    /// The verified backup of the file data: the way back.
    pub backup: BackupRef,
    /// The pod whose data is copied (pod 0).
    pub pod: String,
    /// Raft voters the cluster is to end with.
    pub replicas: u8,
    /// The stored key generation that unseals the data, before and after.
    pub generation: u32,
    /// Keys the raft copy holds (set once the copy is checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// A random value written to the root token's cubbyhole before the
    /// copy; phase 2 reads it back (not a secret).
    pub sentinel: String,
}

/// A backup of file-storage data: a tar.gz with a manifest beside it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupRef {
    /// `--backup-to` as given (a path or a bucket URL; never holds credentials).
    pub location: String,
    /// The object as people name it.
    pub object: String,
    pub name: String,
    pub sha256: String,
}

impl Phase {
    /// The phase's name as it is serialized, for people.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::InitPending { .. } => "init_pending",
            Phase::InitKeysStored { .. } => "init_keys_stored",
            Phase::RotatePending { .. } => "rotate_pending",
            Phase::RootTokenPending { .. } => "root_token_pending",
            Phase::RestorePending { .. } => "restore_pending",
            Phase::RecoverPending { .. } => "recover_pending",
            Phase::RecoverTempInit { .. } => "recover_temp_init",
            Phase::RestoreApplied { .. } => "restore_applied",
            Phase::MigratePending { .. } => "migrate_pending",
            Phase::AwaitingRaftValues { .. } => "awaiting_raft_values",
            Phase::DrSynced { .. } => "dr_synced",
        }
    }
}

/// The snapshot a restore or recover works from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRef {
    /// `--from` as given (a path or a bucket URL; never holds credentials).
    pub location: String,
    pub name: String,
    pub sha256: String,
    /// The key generation whose shares unseal the snapshot's data.
    pub generation: u32,
}

impl Checkpoint {
    pub fn new(holder: &str, phase: Phase) -> Self {
        Checkpoint {
            schema: CHECKPOINT_SCHEMA,
            holder: holder.to_owned(),
            updated_at: now_rfc3339(),
            phase,
        }
    }

    /// The command that resumes the operation, for `status` and error
    /// hints: for a restore or recover, with the snapshot it works from, so
    /// that the command runs as printed.
    pub fn resume_command(&self) -> String {
        let base = self.operation().resume_command();
        if let Phase::DrSynced {
            standby, config, ..
        } = &self.phase
        {
            return format!(
                "{base} --config {} --standby {}",
                config
                    .as_deref()
                    .map_or_else(|| "DR.yaml".into(), shell_word),
                shell_word(standby)
            );
        }
        let snapshot = match &self.phase {
            Phase::RestorePending { snapshot }
            | Phase::RecoverPending { snapshot }
            | Phase::RecoverTempInit { snapshot, .. }
            | Phase::RestoreApplied { snapshot, .. } => snapshot,
            _ => return base.to_owned(),
        };
        let location = snapshot.location.as_str();
        let remote = location.contains("://");
        let names_the_file = !remote
            && std::path::Path::new(location)
                .file_name()
                .is_some_and(|f| f == snapshot.name.as_str())
            && !location.ends_with('/');
        use crate::ops::operation::Operation;
        match self.operation() {
            // A bucket prefix or folder, and the name within it.
            Operation::Restore if !names_the_file => format!(
                "{base} --from {} --snapshot {}",
                shell_word(location),
                shell_word(&snapshot.name)
            ),
            // recover takes one file, or the newest in a bucket prefix.
            Operation::Recover if !names_the_file && !remote => format!(
                "{base} --from {}",
                shell_word(&format!(
                    "{}/{}",
                    location.trim_end_matches('/'),
                    snapshot.name
                ))
            ),
            _ => format!("{base} --from {}", shell_word(location)),
        }
    }

    /// What abandoning this checkpoint would lose: `Some` when it holds key
    /// material that `stored` does not, which the cluster may need.
    pub fn abandon_risk(&self, stored: Option<&Credentials>) -> Option<&'static str> {
        let kept = |c: &Credentials| stored.is_some_and(|s| s.same_secrets(c));
        match &self.phase {
            Phase::InitKeysStored { credentials } if !kept(credentials) => {
                Some("the keys of an interrupted init, stored nowhere else")
            }
            Phase::RotatePending { next, .. } if !kept(next) => {
                Some("new unseal shares that may already be the cluster's current ones")
            }
            Phase::RootTokenPending { next, .. } if !kept(next) => {
                Some("a new root token that may be the only valid one")
            }
            Phase::RecoverTempInit { .. } => {
                Some("the keys of the temporary init that recover put on the first pod")
            }
            _ => None,
        }
    }

    /// The operation that owns this checkpoint.
    pub fn operation(&self) -> crate::ops::operation::Operation {
        self.phase.operation()
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        match &self.phase {
            Phase::InitKeysStored { credentials } => Some(credentials),
            _ => None,
        }
    }

    /// Key generations an interrupted operation may have made current, to try
    /// when unsealing, newest first.
    pub fn candidate_credentials(&self) -> Vec<&Credentials> {
        match &self.phase {
            Phase::InitPending { .. } => vec![],
            Phase::InitKeysStored { credentials } => vec![credentials],
            Phase::RotatePending { previous, next, .. } => vec![next, previous],
            Phase::RootTokenPending { next, .. } => vec![next],
            // The temporary keys of a recover never unseal the restored data.
            Phase::RestorePending { .. }
            | Phase::RecoverPending { .. }
            | Phase::RecoverTempInit { .. }
            | Phase::RestoreApplied { .. } => vec![],
            // A migrate never changes the keys: the stored ones are the only ones.
            Phase::MigratePending { .. } | Phase::AwaitingRaftValues { .. } => vec![],
            // The restore of a sync stored its credentials before this phase.
            Phase::DrSynced { .. } => vec![],
        }
    }
}

/// `word` as one shell word: unchanged when it is plain, else single-quoted.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._:@%+=,-".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Current UTC time, RFC 3339 with second precision.
pub fn now_rfc3339() -> String {
    rfc3339(jiff::Timestamp::now())
}

/// `at` in UTC, RFC 3339 with second precision, truncated: a time read
/// back is never later than the moment it records (retention's ages).
pub fn rfc3339(at: jiff::Timestamp) -> String {
    at.round(
        jiff::TimestampRound::new()
            .smallest(jiff::Unit::Second)
            .mode(jiff::RoundMode::Trunc),
    )
    .map(|t| t.to_string())
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_serialize_with_a_tag_and_schema() {
        let c = Checkpoint::new(
            "host/1",
            Phase::InitPending {
                key_shares: 5,
                key_threshold: 3,
                pod: Some("openbao-0".into()),
            },
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["phase"]["phase"], "init_pending");
        assert_eq!(serde_json::from_value::<Checkpoint>(json).unwrap(), c);
    }

    #[test]
    fn an_init_pending_checkpoint_of_an_older_release_still_loads() {
        let old = r#"{"schema":1,"holder":"h","updated_at":"t","phase":{"phase":"init_pending","key_shares":5,"key_threshold":3}}"#;
        let c: Checkpoint = serde_json::from_str(old).unwrap();
        assert!(matches!(c.phase, Phase::InitPending { pod: None, .. }));
    }

    /// The hint names the DR group file the interrupted sync ran with; a
    /// checkpoint written before the file was recorded still loads.
    #[test]
    fn a_dr_synced_checkpoint_resumes_with_its_own_group_file() {
        let snapshot = SnapshotRef {
            location: "s3://b/prod/".into(),
            name: "x.snap".into(),
            sha256: "00".into(),
            generation: 1,
        };
        let phase = |config: Option<&str>| Phase::DrSynced {
            snapshot: snapshot.clone(),
            standby: "west".into(),
            primary: "east".into(),
            epoch: 2,
            config: config.map(str::to_owned),
        };
        let c = Checkpoint::new("h", phase(Some("/etc/dr groups/prod.yaml")));
        assert_eq!(
            c.resume_command(),
            "kubectl vault dr sync --config '/etc/dr groups/prod.yaml' --standby west"
        );
        let mut old = serde_json::to_value(Checkpoint::new("h", phase(None))).unwrap();
        assert!(old["phase"].get("config").is_none());
        old["phase"].as_object_mut().unwrap().remove("config");
        let c: Checkpoint = serde_json::from_value(old).unwrap();
        assert!(c
            .resume_command()
            .contains("--config DR.yaml --standby west"));
    }
}
