//! `snapshot save`: copy the active node's raft snapshot into a snapshot
//! store, describe it with a manifest, then apply retention.
//!
//! Owns the order of the steps, what is visible after each, and which
//! snapshots retention may delete. Where the bytes come from (a pod, through
//! port-forward or exec) is the caller's [`SnapshotSource`]; where they go
//! (a file, a folder, a bucket prefix) is the caller's [`SnapshotStore`].
//! Asking before an existing object is replaced, and the restore-test that
//! may run between [`save`] and [`Saved::apply_retention`], are the caller's.
//!
//! # Expected flow
//! 1. [`plan`]: read what the manifest records of the source (cluster,
//!    server version, seal, raft index, pod), name the snapshot and check
//!    that the store can take it, reporting an object already there. Nothing
//!    streamed, nothing written: the caller can still ask.
//! 2. [`save`]: start an upload, then stream the source into it while
//!    hashing; a stream that is not a whole raft snapshot (short, not gzip,
//!    cut) or a producer that failed aborts the upload.
//! 3. Commit the upload (failpoint `snapshot::before_finish` just before),
//!    then write the manifest: after the snapshot, so a manifest never names
//!    bytes that are not there.
//! 4. [`Saved::apply_retention`]: list the store once; among this cluster's
//!    snapshots, delete what the policy drops, except the newest that
//!    verifies.
//!
//! # Guarantees
//! - A save that fails before step 3 leaves nothing visible: the upload is
//!   aborted (a `.partial` file removed, a multipart upload cancelled).
//! - A snapshot without a manifest is never trusted (restore and retention
//!   skip it), so a crash between the commit and the manifest leaves an
//!   untrusted file, never a trusted wrong one.
//! - Retention never deletes the newest verified snapshot of this cluster,
//!   nor a snapshot without a manifest, nor another cluster's snapshot (a
//!   shared prefix holds theirs).
//! - The credentials' generation goes into the manifest; no secret does.

mod source;
mod store;

#[cfg(test)]
mod double;
#[cfg(test)]
mod tests;

pub use source::{Origin, SnapshotSource, SourceError};
pub use store::{SnapshotStore, SnapshotUpload};

use crate::ops::checkpoint::rfc3339;
use crate::snapshot::location::{Entry, Existing, Verification};
use crate::snapshot::manifest::{Manifest, MANIFEST_SCHEMA};
use crate::snapshot::retention::{self, Candidate, Policy};
use crate::snapshot::stream::{pump, Digested};
use crate::snapshot::SnapshotError;

/// The time the operation reads: snapshot names, manifest times, ages.
pub trait Clock: Send + Sync {
    fn now(&self) -> jiff::Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// What a save will write, checked before anything streams.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The snapshot's name in the store.
    pub name: String,
    /// The snapshot as users name it (for messages).
    pub object: String,
    pub origin: Origin,
    /// The object already under `name`, which the save would replace.
    pub existing: Option<String>,
}

/// What to do with an object already under the planned name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExisting {
    Replace,
    Keep,
}

/// A saved snapshot: the report of the operation.
#[derive(Clone, Debug)]
pub struct Saved {
    pub object: String,
    /// The manifest as written (the caller adds a restore-test's record).
    pub manifest: Manifest,
    /// The snapshots retention deleted, by name.
    pub pruned: Vec<String>,
}

/// Why a save stopped. [`SaveError::is_refusal`] tells a precondition the
/// user can fix (exit 1) from a failure (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    ReadOrigin(SourceError),
    #[error(transparent)]
    Preflight(SnapshotError),
    #[error("{object} exists and was not replaced; nothing was changed (--yes replaces it)")]
    NotReplaced { object: String },
    #[error(transparent)]
    StartUpload(SnapshotError),
    #[error(transparent)]
    OpenStream(SourceError),
    /// The store refused or lost the upload mid-stream.
    #[error("nothing was kept")]
    StoreWrite(#[source] SnapshotError),
    /// The stream is not a whole raft snapshot (short, not gzip, cut).
    #[error(transparent)]
    Stream(SnapshotError),
    /// The producer of the stream failed (the stream may have looked whole).
    #[error(transparent)]
    Source(SourceError),
    #[error(transparent)]
    Commit(SnapshotError),
    #[error(transparent)]
    WriteManifest(SnapshotError),
    #[error(transparent)]
    Prune(SnapshotError),
}

impl SaveError {
    /// A precondition (the target, the answer to the question, the stream
    /// the server sent): nothing was changed and the user decides what next.
    /// Everything else (the store refused or lost the upload, the source
    /// failed) is a failure worth a re-run.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            SaveError::Preflight(_) | SaveError::NotReplaced { .. } | SaveError::Stream(_)
        )
    }
}

/// Step 1: reads the source's origin, names the snapshot `workload`-`time`
/// (or the file's own name) and checks that `store` can take it.
pub async fn plan<Src: SnapshotSource, St: SnapshotStore>(
    source: &mut Src,
    store: &St,
    workload: &str,
    clock: &impl Clock,
) -> Result<Plan, SaveError> {
    let origin = source.origin().await.map_err(SaveError::ReadOrigin)?;
    let name = store.name_for(workload, clock.now());
    let object = store.object(&name);
    let existing = match store
        .preflight_write(&name)
        .await
        .map_err(SaveError::Preflight)?
    {
        Existing::No => None,
        Existing::Yes { object } => Some(object),
    };
    Ok(Plan {
        name,
        object,
        origin,
        existing,
    })
}

/// Steps 2 and 3: streams `source` into `store` under the planned name,
/// commits it and writes its manifest, naming key generation `generation`.
pub async fn save<Src: SnapshotSource, St: SnapshotStore>(
    source: &mut Src,
    store: &St,
    plan: Plan,
    on_existing: OnExisting,
    generation: u32,
    clock: &impl Clock,
) -> Result<Saved, SaveError> {
    if let (Some(object), OnExisting::Keep) = (&plan.existing, on_existing) {
        return Err(SaveError::NotReplaced {
            object: object.clone(),
        });
    }
    tracing::info!(pod = %plan.origin.pod, to = %plan.object, "saving a raft snapshot from the active node");
    let mut upload = store
        .upload(&plan.name)
        .await
        .map_err(SaveError::StartUpload)?;
    let digested = match stream(source, &mut upload).await {
        Ok(digested) => digested,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    fail::fail_point!("snapshot::before_finish");
    upload.finish().await.map_err(SaveError::Commit)?;
    let Plan {
        name,
        object,
        origin,
        ..
    } = plan;
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        snapshot: name,
        sha256: digested.sha256,
        size: digested.size,
        cluster_id: origin.cluster_id,
        raft_committed_index: origin.raft_index,
        raft_term: None,
        server_version: origin.server_version,
        generation,
        created_at: rfc3339(clock.now()),
        source_pod: origin.pod,
        seal: origin.seal,
        restore_test: None,
    };
    store
        .write_manifest(&manifest)
        .await
        .map_err(SaveError::WriteManifest)?;
    tracing::info!(to = %object, size = manifest.size, sha256 = %manifest.sha256, "snapshot saved");
    Ok(Saved {
        object,
        manifest,
        pruned: vec![],
    })
}

/// Opens the source and pumps it into `upload`. The producer's end is read
/// even when the stream failed: a producer that failed explains a broken
/// stream better than the stream does.
async fn stream<Src: SnapshotSource, U: SnapshotUpload>(
    source: &mut Src,
    upload: &mut U,
) -> Result<Digested, SaveError> {
    let reader = source.open().await.map_err(SaveError::OpenStream)?;
    let pumped = pump(reader, upload).await;
    source.close().await.map_err(SaveError::Source)?;
    pumped.map_err(|e| match e {
        e @ SnapshotError::Write { .. } => SaveError::StoreWrite(e),
        e => SaveError::Stream(e),
    })
}

impl Saved {
    /// Step 4: applies `policy` to the snapshots of this snapshot's cluster
    /// in `store`, and records what was deleted in [`Saved::pruned`]. An
    /// empty policy lists nothing.
    pub async fn apply_retention<St: SnapshotStore>(
        &mut self,
        store: &St,
        policy: Policy,
        clock: &impl Clock,
    ) -> Result<(), SaveError> {
        if policy.is_empty() {
            return Ok(());
        }
        let cluster = self.manifest.cluster_id.as_str();
        let entries = store.list().await.map_err(SaveError::Prune)?;
        let protected = newest_verified(store, &entries, cluster).await;
        let candidates: Vec<Candidate> = entries
            .iter()
            .filter(|e| e.of_cluster(Some(cluster)))
            .map(|e| Candidate {
                name: e.name.clone(),
                created: e.created(),
                has_manifest: e.manifest.is_some(),
            })
            .collect();
        let doomed = retention::plan(&candidates, policy, protected.as_deref(), clock.now());
        for name in &doomed {
            tracing::info!(snapshot = %store.object(name), "pruning");
            store.delete(name).await.map_err(SaveError::Prune)?;
        }
        self.pruned = doomed;
        Ok(())
    }
}

/// The newest of `entries` (newest first) of `cluster` that verifies;
/// corrupt ones are skipped with a warning.
async fn newest_verified<St: SnapshotStore>(
    store: &St,
    entries: &[Entry],
    cluster: &str,
) -> Option<String> {
    for entry in entries {
        if entry.quick_status() != Verification::ManifestOk {
            continue;
        }
        if !entry.of_cluster(Some(cluster)) {
            tracing::info!(snapshot = %entry.name, "skipping a snapshot of another cluster");
            continue;
        }
        match store.verify(&entry.name).await {
            Ok(_) => return Some(entry.name.clone()),
            Err(e) => tracing::warn!(error = %e, "skipping a snapshot that does not verify"),
        }
    }
    None
}
