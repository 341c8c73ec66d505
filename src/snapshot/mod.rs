//! Raft snapshots as files: where they go, what describes them, which to keep.
//!
//! Owns the snapshot [`target`] as written (parsed purely) and the
//! [`location`] it opens (a local file or folder, or an S3, GCS or Azure
//! bucket prefix through the [`client`]s of `object_store`, GCS writes
//! through its JSON API's [`resumable`] uploads), the [`upload`] in
//! progress, each listed [`entry`], the JSON [`manifest`] sidecar written next
//! to every snapshot, hashing while bytes stream through ([`stream`]), and the
//! [`retention`] rule. Everything streams in bounded buffers: a snapshot is
//! never held whole in memory, and no temp file grows with it except the
//! `.partial` file a local target renames into place.
//!
//! It does not talk to Vault or Kubernetes: a location is the save
//! operation's snapshot [`store`] (`ops::snapshot_save` decides the order of
//! a save), `cmd::snapshot` supplies the pod's stream, and the restore and
//! recover state machines in `ops` decide when bytes flow back.

pub mod archive;
pub mod client;
pub mod entry;
pub mod location;
pub mod manifest;
pub mod resumable;
pub mod retention;
pub mod state;
pub mod store;
pub mod stream;
pub mod target;
pub mod upload;

/// Refuses a snapshot name that is not a plain file name: a name from a
/// manifest or from `--snapshot` is joined to a folder or bucket prefix and
/// must not leave it.
pub fn plain_name(name: &str) -> Result<(), SnapshotError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.starts_with('~');
    if bad {
        return Err(SnapshotError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A snapshot shorter than this is refused: even an empty cluster's raft
/// snapshot (a gzip tar with the barrier keyring) is several KiB.
pub const MIN_SNAPSHOT_BYTES: u64 = 1024;

/// Why a snapshot operation failed. Messages name locations and sizes, never data.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("`{0}` is not a snapshot location: {1}; nothing was changed")]
    ParseLocation(String, String),
    #[error("cannot save to {target}: {reason}; nothing was streamed")]
    Unwritable { target: String, reason: String },
    #[error("could not write {object}: {reason}")]
    Write { object: String, reason: String },
    #[error("could not read {object}: {reason}")]
    Read { object: String, reason: String },
    #[error("could not list {location}: {reason}")]
    List { location: String, reason: String },
    #[error("could not delete {object}: {reason}")]
    Delete { object: String, reason: String },
    #[error("the snapshot stream was {size} bytes, too short for a raft snapshot (at least {MIN_SNAPSHOT_BYTES}); nothing was kept")]
    Short { size: u64 },
    #[error("the snapshot stream does not start like a raft snapshot (gzip); nothing was kept")]
    NotASnapshot,
    #[error(
        "{object} has no manifest ({manifest}); it may be a partial upload: refusing to use it"
    )]
    NoManifest { object: String, manifest: String },
    #[error("{object} is {actual} bytes but its manifest says {expected}: the snapshot is truncated or was replaced")]
    SizeMismatch {
        object: String,
        expected: u64,
        actual: u64,
    },
    #[error("{object} does not match its manifest's sha256 (expected {expected}, got {actual}): the snapshot is corrupt")]
    ChecksumMismatch {
        object: String,
        expected: String,
        actual: String,
    },
    #[error("the manifest {object} is not valid: {reason}")]
    BadManifest { object: String, reason: String },
    #[error("no verified snapshot in {location}")]
    NoneVerified { location: String },
    #[error("no verified snapshot of cluster {cluster} in {location}; {skipped} snapshot(s) of other clusters were not considered (--allow-foreign-cluster considers them)")]
    NoneOfThisCluster {
        location: String,
        cluster: String,
        skipped: usize,
    },
    #[error("{object} is not a raft snapshot: {reason}")]
    NotRaftSnapshot {
        object: String,
        reason: archive::ArchiveError,
    },
    #[error("`{name}` is not a plain snapshot file name (no `/`, no `..`, not absolute)")]
    BadName { name: String },
    #[error("the manifest {manifest} describes {named}, not {name}: refusing to use it")]
    ManifestNamesOther {
        manifest: String,
        named: String,
        name: String,
    },
    #[error("no snapshot named {name} in {location}")]
    NotFound { name: String, location: String },
}
