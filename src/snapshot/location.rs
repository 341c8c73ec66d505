//! Where snapshots live: one local file, a local folder, or a bucket prefix
//! in S3, GCS or Azure Blob storage.
//!
//! Owns parsing `--to`/`--from`, checking a target before anything streams,
//! streaming writes (a `.partial` file renamed into place; a multipart
//! upload, or a block upload on Azure, committed only at the end), streaming
//! reads, listing with each snapshot's manifest, and deleting a snapshot
//! with its manifest. Any scheme it does not know is refused by name.

use crate::snapshot::archive::{inspect, Members};
use crate::snapshot::client::client;
use crate::snapshot::manifest::{manifest_name, Manifest};
use crate::snapshot::resumable::GcsJson;
use crate::snapshot::stream::{Digested, HashingReader};
use crate::snapshot::target::Target;
use crate::snapshot::upload::partial_path;
use crate::snapshot::{plain_name, SnapshotError};
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncRead;

pub use crate::snapshot::entry::{Entry, Verification};
pub use crate::snapshot::upload::Upload;

/// The file extension of snapshots this tool writes and lists.
pub const SNAPSHOT_EXT: &str = ".snap";

/// Parts in flight at once during an upload; with 8 MiB parts this bounds
/// the upload's memory near 24 MiB whatever the snapshot's size. A snapshot
/// smaller than one part is a single plain upload.
const PARTS_IN_FLIGHT: usize = 2;
const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub enum Location {
    /// One snapshot file named by the user.
    File { path: PathBuf },
    /// A local folder of snapshots.
    Dir { path: PathBuf },
    /// A bucket prefix.
    Bucket {
        url: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        /// GCS only: its JSON API, which writes (see
        /// [`crate::snapshot::resumable`]).
        gcs: Option<Arc<GcsJson>>,
    },
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File { path } | Location::Dir { path } => write!(f, "{}", path.display()),
            Location::Bucket { url, .. } => f.write_str(url),
        }
    }
}

/// Whether a save's target object is already there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    No,
    Yes { object: String },
}

impl Location {
    /// Parses `text` ([`Target::parse`], pure) and opens it.
    pub fn parse(text: &str) -> Result<Location, SnapshotError> {
        Location::from_target(Target::parse(text)?, text)
    }

    /// Opens a parsed target: a bucket gets its provider's client,
    /// configured from the provider's usual environment (nothing is sent
    /// yet); a path is a folder if one is there now, else a file. `text` is
    /// what the user wrote, for errors.
    pub fn from_target(target: Target, text: &str) -> Result<Location, SnapshotError> {
        match target {
            Target::Bucket {
                provider,
                bucket,
                prefix,
            } => {
                // The clients' TLS uses the process's rustls provider: ring,
                // as kube's. A second install (already set) is fine.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let (store, gcs) = client(provider, &bucket).map_err(|e| {
                    SnapshotError::ParseLocation(
                        text.to_owned(),
                        format!(
                            "the {} client could not be configured: {e}",
                            provider.name()
                        ),
                    )
                })?;
                // The URL as written (with its slashes), as messages show it.
                let rest = text.split_once("://").map_or("", |(_, r)| r);
                let url = if rest.contains('/') {
                    text.to_owned()
                } else {
                    format!("{text}/")
                };
                Ok(Location::Bucket {
                    url,
                    store,
                    prefix: ObjectPath::from(prefix.as_str()),
                    gcs,
                })
            }
            Target::Dir(path) => Ok(Location::Dir { path }),
            Target::Path(path) if path.is_dir() => Ok(Location::Dir { path }),
            Target::Path(path) => Ok(Location::File { path }),
        }
    }

    /// Checks, before anything streams, that snapshot `name` can be written
    /// here: a folder is created if missing and a probe file is written and
    /// removed in it; a bucket prefix is listed. Reports whether `name`
    /// already exists, so that the caller can ask before replacing it.
    ///
    /// # Guarantees
    /// - Nothing is left behind but a folder that the save would have
    ///   created anyway.
    /// - A target that is a file where a folder is needed, a folder that
    ///   cannot be created, or one that cannot be written is an error that
    ///   names it.
    pub async fn preflight_write(&self, name: &str) -> Result<Existing, SnapshotError> {
        let object = self.object(name);
        let err = |reason: String| SnapshotError::Unwritable {
            target: self.to_string(),
            reason,
        };
        match self {
            Location::Bucket { store, prefix, .. } => {
                let listed = (!prefix.as_ref().is_empty()).then_some(prefix);
                store
                    .list_with_delimiter(listed)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                match store.head(&Self::object_path(prefix, name)).await {
                    Ok(_) => Ok(Existing::Yes { object }),
                    Err(object_store::Error::NotFound { .. }) => Ok(Existing::No),
                    Err(e) => Err(err(e.to_string())),
                }
            }
            _ => {
                let path = self.local_path(name).unwrap_or_default();
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                let probe = dir.join(format!(
                    ".kubectl-vault-probe-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                ));
                tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&probe)
                    .await
                    .map_err(|e| err(format!("cannot create a file in {}: {e}", dir.display())))?;
                let _ = tokio::fs::remove_file(&probe).await;
                match tokio::fs::symlink_metadata(&path).await {
                    Ok(meta) if meta.is_dir() => Err(err(format!(
                        "{} is a folder; end the target with / to save into it",
                        path.display()
                    ))),
                    Ok(_) => Ok(Existing::Yes { object }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Existing::No),
                    Err(e) => Err(err(e.to_string())),
                }
            }
        }
    }

    /// True for a folder or bucket, where names are chosen and retention applies.
    pub fn is_collection(&self) -> bool {
        !matches!(self, Location::File { .. })
    }

    /// How users name one object here (for messages).
    pub fn object(&self, name: &str) -> String {
        match self {
            Location::File { path } => path.with_file_name(name).display().to_string(),
            Location::Dir { path } => path.join(name).display().to_string(),
            Location::Bucket { url, .. } => format!("{}/{name}", url.trim_end_matches('/')),
        }
    }

    /// The name a save writes: the file's own name, or `<workload>-<time>.snap`.
    pub fn name_for(&self, workload: &str, now: jiff::Timestamp) -> String {
        match self {
            Location::File { path } => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "snapshot.snap".into()),
            _ => format!(
                "{workload}-{}{SNAPSHOT_EXT}",
                now.strftime("%Y%m%dT%H%M%SZ")
            ),
        }
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        match self {
            Location::File { path } => Some(path.with_file_name(name)),
            Location::Dir { path } => Some(path.join(name)),
            Location::Bucket { .. } => None,
        }
    }

    fn object_path(prefix: &ObjectPath, name: &str) -> ObjectPath {
        if prefix.as_ref().is_empty() {
            ObjectPath::from(name)
        } else {
            prefix.clone().join(name)
        }
    }

    /// Starts writing snapshot `name`; nothing is visible under that name
    /// until [`Upload::finish`].
    pub async fn upload(&self, name: &str) -> Result<Upload, SnapshotError> {
        let object = self.object(name);
        let write_err = |e: String| SnapshotError::Write {
            object: object.clone(),
            reason: e,
        };
        match self {
            Location::Bucket {
                gcs: Some(gcs),
                prefix,
                ..
            } => {
                let path = Self::object_path(prefix, name);
                let writer = gcs.start(path.as_ref()).await.map_err(write_err)?;
                Ok(Upload::Resumable { object, writer })
            }
            Location::Bucket { store, prefix, .. } => {
                // Up to one part is buffered: a snapshot that fits is one
                // plain upload, a bigger one a multipart (block) upload
                // whose parts stream out as they fill.
                let path = Self::object_path(prefix, name);
                let writer = BufWriter::with_capacity(store.clone(), path, PART_SIZE)
                    .with_max_concurrency(PARTS_IN_FLIGHT);
                Ok(Upload::Multipart { object, writer })
            }
            _ => {
                let path = self.local_path(name).unwrap_or_default();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| write_err(e.to_string()))?;
                }
                let partial = partial_path(&path);
                let file = tokio::fs::File::create(&partial)
                    .await
                    .map_err(|e| write_err(e.to_string()))?;
                Ok(Upload::File {
                    object,
                    file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
                    partial,
                    path,
                })
            }
        }
    }

    /// Writes the manifest next to its snapshot (small: one put).
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), SnapshotError> {
        let name = manifest_name(&manifest.snapshot);
        let object = self.object(&name);
        let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| SnapshotError::Write {
            object: object.clone(),
            reason: e.to_string(),
        })?;
        let err = |e: String| SnapshotError::Write {
            object: object.clone(),
            reason: e,
        };
        match self {
            Location::Bucket {
                gcs: Some(gcs),
                prefix,
                ..
            } => gcs
                .put(Self::object_path(prefix, &name).as_ref(), bytes)
                .await
                .map_err(err),
            Location::Bucket { store, prefix, .. } => store
                .put(&Self::object_path(prefix, &name), PutPayload::from(bytes))
                .await
                .map(drop)
                .map_err(|e| err(e.to_string())),
            _ => {
                let path = self.local_path(&name).unwrap_or_default();
                let partial = partial_path(&path);
                tokio::fs::write(&partial, &bytes)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                tokio::fs::rename(&partial, &path)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
        }
    }

    /// The manifest of snapshot `name`, `None` when there is none.
    pub async fn read_manifest(&self, name: &str) -> Result<Option<Manifest>, SnapshotError> {
        plain_name(name)?;
        let mname = manifest_name(name);
        let object = self.object(&mname);
        let bytes = match self {
            Location::Bucket { store, prefix, .. } => {
                match store.get(&Self::object_path(prefix, &mname)).await {
                    Ok(got) => got.bytes().await.map(|b| b.to_vec()),
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => Err(e),
                }
                .map_err(|e| SnapshotError::Read {
                    object: object.clone(),
                    reason: e.to_string(),
                })?
            }
            _ => match tokio::fs::read(self.local_path(&mname).unwrap_or_default()).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(SnapshotError::Read {
                        object,
                        reason: e.to_string(),
                    })
                }
            },
        };
        Manifest::parse(&bytes)
            .map(Some)
            .map_err(|reason| SnapshotError::BadManifest { object, reason })
    }

    /// Opens snapshot `name` for reading, with its size.
    pub async fn open(
        &self,
        name: &str,
    ) -> Result<(Box<dyn AsyncRead + Send + Unpin>, u64), SnapshotError> {
        plain_name(name)?;
        let object = self.object(name);
        let read_err = |e: String| SnapshotError::Read {
            object: object.clone(),
            reason: e,
        };
        match self {
            Location::Bucket { store, prefix, .. } => {
                let got =
                    store
                        .get(&Self::object_path(prefix, name))
                        .await
                        .map_err(|e| match e {
                            object_store::Error::NotFound { .. } => SnapshotError::NotFound {
                                name: name.to_owned(),
                                location: self.to_string(),
                            },
                            e => read_err(e.to_string()),
                        })?;
                let size = got.meta.size;
                let stream = got.into_stream().map_err(std::io::Error::other);
                Ok((Box::new(tokio_util::io::StreamReader::new(stream)), size))
            }
            _ => {
                let path = self.local_path(name).unwrap_or_default();
                let file = tokio::fs::File::open(&path).await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        SnapshotError::NotFound {
                            name: name.to_owned(),
                            location: self.to_string(),
                        }
                    } else {
                        read_err(e.to_string())
                    }
                })?;
                let size = file
                    .metadata()
                    .await
                    .map_err(|e| read_err(e.to_string()))?
                    .len();
                Ok((
                    Box::new(tokio::io::BufReader::with_capacity(256 * 1024, file)),
                    size,
                ))
            }
        }
    }

    /// Every `*.snap` here with its manifest, newest first (manifest time,
    /// then name); snapshots without a manifest sort last.
    pub async fn list(&self) -> Result<Vec<Entry>, SnapshotError> {
        let list_err = |e: String| SnapshotError::List {
            location: self.to_string(),
            reason: e,
        };
        let mut found: Vec<(String, u64)> = Vec::new();
        match self {
            Location::File { path } => {
                if let Ok(meta) = tokio::fs::metadata(path).await {
                    found.push((self.name_for("", jiff::Timestamp::now()), meta.len()));
                }
            }
            Location::Dir { path } => {
                let mut dir = match tokio::fs::read_dir(path).await {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                    Err(e) => return Err(list_err(e.to_string())),
                };
                while let Some(item) = dir
                    .next_entry()
                    .await
                    .map_err(|e| list_err(e.to_string()))?
                {
                    let name = item.file_name().to_string_lossy().into_owned();
                    if name.ends_with(SNAPSHOT_EXT) {
                        let meta = item.metadata().await.map_err(|e| list_err(e.to_string()))?;
                        found.push((name, meta.len()));
                    }
                }
            }
            Location::Bucket { store, prefix, .. } => {
                let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
                let mut stream = store.list(prefix);
                while let Some(meta) = stream.next().await {
                    let meta = meta.map_err(|e| list_err(e.to_string()))?;
                    let Some(name) = meta.location.filename().map(str::to_owned) else {
                        continue;
                    };
                    if name.ends_with(SNAPSHOT_EXT) {
                        found.push((name, meta.size));
                    }
                }
            }
        }
        let mut entries = Vec::with_capacity(found.len());
        for (name, size) in found {
            let manifest = self.read_manifest(&name).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring an unreadable manifest");
                None
            });
            entries.push(Entry {
                name,
                size,
                manifest,
            });
        }
        entries.sort_by(|a, b| {
            b.created()
                .cmp(&a.created())
                .then_with(|| b.name.cmp(&a.name))
        });
        Ok(entries)
    }

    /// Re-hashes snapshot `name`, compares it with its manifest, and checks
    /// that it is a raft snapshot (gzip, tar, members against SHA256SUMS),
    /// all in one streaming read. The manifest must describe `name` itself.
    pub async fn verify(&self, name: &str) -> Result<(Manifest, Digested), SnapshotError> {
        self.verify_members(name)
            .await
            .map(|(manifest, digested, _)| (manifest, digested))
    }

    /// [`Self::verify`], also returning what the archive holds.
    pub async fn verify_members(
        &self,
        name: &str,
    ) -> Result<(Manifest, Digested, Members), SnapshotError> {
        let object = self.object(name);
        let manifest =
            self.read_manifest(name)
                .await?
                .ok_or_else(|| SnapshotError::NoManifest {
                    object: object.clone(),
                    manifest: self.object(&manifest_name(name)),
                })?;
        if manifest.snapshot != name {
            return Err(SnapshotError::ManifestNamesOther {
                manifest: self.object(&manifest_name(name)),
                named: manifest.snapshot.clone(),
                name: name.to_owned(),
            });
        }
        let (reader, size) = self.open(name).await?;
        if size != manifest.size {
            return Err(SnapshotError::SizeMismatch {
                object,
                expected: manifest.size,
                actual: size,
            });
        }
        let (reader, probe) = HashingReader::new(reader);
        let mut bridge = tokio_util::io::SyncIoBridge::new(reader);
        let read_err = |reason: String| SnapshotError::Read {
            object: object.clone(),
            reason,
        };
        let format = tokio::task::spawn_blocking(move || {
            let format = inspect(&mut bridge);
            // Hash to the end whatever the format said: a checksum mismatch
            // is the better diagnosis for a damaged file.
            std::io::copy(&mut bridge, &mut std::io::sink()).map(|_| format)
        })
        .await
        .map_err(|e| read_err(e.to_string()))?
        .map_err(|e| read_err(e.to_string()))?;
        let digested = probe.digest();
        check(&object, &manifest, &digested)?;
        let members = format.map_err(|reason| SnapshotError::NotRaftSnapshot {
            object: object.clone(),
            reason,
        })?;
        Ok((manifest, digested, members))
    }

    /// The newest snapshot that verifies; corrupt ones are skipped with a
    /// warning. With `cluster`, snapshots whose manifest names another
    /// cluster are not considered (a shared prefix may hold foreign or
    /// planted ones).
    pub async fn newest_verified(
        &self,
        cluster: Option<&str>,
    ) -> Result<(String, Manifest), SnapshotError> {
        let mut skipped = 0;
        for entry in self.list().await? {
            if entry.quick_status() != Verification::ManifestOk {
                continue;
            }
            if !entry.of_cluster(cluster) {
                skipped += 1;
                tracing::info!(snapshot = %entry.name, "skipping a snapshot of another cluster");
                continue;
            }
            match self.verify(&entry.name).await {
                Ok((manifest, _)) => return Ok((entry.name, manifest)),
                Err(e) => tracing::warn!(error = %e, "skipping a snapshot that does not verify"),
            }
        }
        match cluster {
            Some(c) if skipped > 0 => Err(SnapshotError::NoneOfThisCluster {
                location: self.to_string(),
                cluster: c.to_owned(),
                skipped,
            }),
            _ => Err(SnapshotError::NoneVerified {
                location: self.to_string(),
            }),
        }
    }

    /// Deletes a snapshot and its manifest (manifest first, so a crash
    /// between the two leaves an untrusted snapshot, never a dangling trust).
    pub async fn delete(&self, name: &str) -> Result<(), SnapshotError> {
        for n in [manifest_name(name), name.to_owned()] {
            let object = self.object(&n);
            let result = match self {
                Location::Bucket { store, prefix, .. } => store
                    .delete(&Self::object_path(prefix, &n))
                    .await
                    .or_else(|e| match e {
                        object_store::Error::NotFound { .. } => Ok(()),
                        e => Err(e.to_string()),
                    }),
                _ => match tokio::fs::remove_file(self.local_path(&n).unwrap_or_default()).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                },
            };
            result.map_err(|reason| SnapshotError::Delete { object, reason })?;
        }
        Ok(())
    }
}

/// Compares what was hashed with the manifest.
pub fn check(object: &str, manifest: &Manifest, digested: &Digested) -> Result<(), SnapshotError> {
    if digested.size != manifest.size {
        return Err(SnapshotError::SizeMismatch {
            object: object.to_owned(),
            expected: manifest.size,
            actual: digested.size,
        });
    }
    if !digested.sha256.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(SnapshotError::ChecksumMismatch {
            object: object.to_owned(),
            expected: manifest.sha256.clone(),
            actual: digested.sha256.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_open_as_folders_when_one_is_there_else_as_files() {
        assert!(matches!(
            Location::parse("file:///srv/snaps/").unwrap(),
            Location::Dir { .. }
        ));
        assert!(matches!(
            Location::parse("./weird://name.snap").unwrap(),
            Location::File { .. }
        ));
        assert!(matches!(
            Location::parse("out/").unwrap(),
            Location::Dir { .. }
        ));
        // Without a slash: a folder that is there, else a file to write.
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Location::parse(dir.path().to_str().unwrap()).unwrap(),
            Location::Dir { .. }
        ));
        let file = dir.path().join("one.snap");
        assert!(matches!(
            Location::parse(file.to_str().unwrap()).unwrap(),
            Location::File { .. }
        ));
    }
}
