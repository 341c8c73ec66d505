//! Where saved snapshots live: the seam between the save and a file, a
//! folder or a bucket prefix.

use crate::snapshot::location::{Entry, Existing};
use crate::snapshot::manifest::Manifest;
use crate::snapshot::SnapshotError;
use std::future::Future;

/// A snapshot being written: invisible under its name until
/// [`SnapshotUpload::finish`].
pub trait SnapshotUpload: Send {
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), SnapshotError>> + Send;

    /// Makes the snapshot visible under its name.
    fn finish(self) -> impl Future<Output = Result<(), SnapshotError>> + Send;

    /// Drops what was written; cleanup that fails is logged, not returned.
    fn abort(self) -> impl Future<Output = ()> + Send;
}

/// A place that holds snapshots and their manifests.
pub trait SnapshotStore: Send + Sync {
    type Upload: SnapshotUpload;

    /// How users name snapshot `name` here (for messages).
    fn object(&self, name: &str) -> String;

    /// The name a save of `workload` at `now` writes.
    fn name_for(&self, workload: &str, now: jiff::Timestamp) -> String;

    /// Checks, before anything streams, that `name` can be written; reports
    /// an object already there. Leaves nothing behind.
    fn preflight_write(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Existing, SnapshotError>> + Send;

    /// Starts writing snapshot `name`.
    fn upload(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Self::Upload, SnapshotError>> + Send;

    /// Writes the manifest next to the snapshot it names.
    fn write_manifest(
        &self,
        manifest: &Manifest,
    ) -> impl Future<Output = Result<(), SnapshotError>> + Send;

    /// Every snapshot with its manifest, newest first; those without a
    /// manifest last.
    fn list(&self) -> impl Future<Output = Result<Vec<Entry>, SnapshotError>> + Send;

    /// Re-reads snapshot `name` against its manifest.
    fn verify(&self, name: &str) -> impl Future<Output = Result<Manifest, SnapshotError>> + Send;

    /// Deletes snapshot `name` and its manifest (the manifest first).
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), SnapshotError>> + Send;
}
