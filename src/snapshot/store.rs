//! A [`Location`] as the save operation's [`SnapshotStore`], and its
//! [`Upload`] as a [`SnapshotUpload`]: each method delegates to the one of
//! the same name, so that what a location does stays in `location.rs`.

use crate::ops::snapshot_save::{SnapshotStore, SnapshotUpload};
use crate::snapshot::location::{Entry, Existing, Location, Upload};
use crate::snapshot::manifest::Manifest;
use crate::snapshot::SnapshotError;

impl SnapshotUpload for Upload {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        Upload::write(self, bytes).await
    }

    async fn finish(self) -> Result<(), SnapshotError> {
        Upload::finish(self).await
    }

    async fn abort(self) {
        Upload::abort(self).await
    }
}

impl SnapshotStore for Location {
    type Upload = Upload;

    fn object(&self, name: &str) -> String {
        Location::object(self, name)
    }

    fn name_for(&self, workload: &str, now: jiff::Timestamp) -> String {
        Location::name_for(self, workload, now)
    }

    async fn preflight_write(&self, name: &str) -> Result<Existing, SnapshotError> {
        Location::preflight_write(self, name).await
    }

    async fn upload(&self, name: &str) -> Result<Upload, SnapshotError> {
        Location::upload(self, name).await
    }

    async fn write_manifest(&self, manifest: &Manifest) -> Result<(), SnapshotError> {
        Location::write_manifest(self, manifest).await
    }

    async fn list(&self) -> Result<Vec<Entry>, SnapshotError> {
        Location::list(self).await
    }

    async fn verify(&self, name: &str) -> Result<Manifest, SnapshotError> {
        Location::verify(self, name)
            .await
            .map(|(manifest, _)| manifest)
    }

    async fn delete(&self, name: &str) -> Result<(), SnapshotError> {
        Location::delete(self, name).await
    }
}
