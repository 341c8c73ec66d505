//! In-memory doubles of [`SnapshotSource`] and [`SnapshotStore`], so each
//! step of a save has a unit test that runs in microseconds, and tests
//! assert what the store holds afterwards.

use super::{Clock, Origin, SnapshotSource, SnapshotStore, SnapshotUpload, SourceError};
use crate::snapshot::location::{Entry, Existing};
use crate::snapshot::manifest::{manifest_name, Manifest};
use crate::snapshot::stream::hex;
use crate::snapshot::SnapshotError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// A clock that reads `at`.
pub struct FixedClock(pub jiff::Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> jiff::Timestamp {
        self.0
    }
}

/// Bytes that look like a raft snapshot to the pump: gzip magic, `len` long.
pub fn snapshot_bytes(len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    data[0] = 0x1f;
    data[1] = 0x8b;
    data
}

pub fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// A source that streams `data`, optionally breaking after `break_at` bytes
/// or failing at its close (an exec that exited non-zero).
pub struct FakeSource {
    pub origin: Origin,
    pub data: Vec<u8>,
    pub break_at: Option<usize>,
    pub fail_close: bool,
    /// How often the stream was opened.
    pub opened: usize,
}

impl FakeSource {
    pub fn new(data: Vec<u8>) -> Self {
        FakeSource {
            origin: Origin {
                cluster_id: "c1".into(),
                server_version: "2.7.2".into(),
                seal: "shamir".into(),
                raft_index: Some(42),
                pod: "openbao-0".into(),
            },
            data,
            break_at: None,
            fail_close: false,
            opened: 0,
        }
    }
}

/// The stream of a [`FakeSource`].
pub struct FakeStream {
    data: Vec<u8>,
    at: usize,
    break_at: Option<usize>,
}

impl AsyncRead for FakeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let end = this
            .break_at
            .unwrap_or(this.data.len())
            .min(this.data.len());
        if this.at >= end {
            return Poll::Ready(match this.break_at {
                Some(_) => Err(std::io::Error::other("the pod went away")),
                None => Ok(()),
            });
        }
        let n = (end - this.at).min(buf.remaining()).min(4096);
        buf.put_slice(&this.data[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl SnapshotSource for FakeSource {
    type Stream = FakeStream;

    async fn origin(&mut self) -> Result<Origin, SourceError> {
        Ok(self.origin.clone())
    }

    async fn open(&mut self) -> Result<FakeStream, SourceError> {
        self.opened += 1;
        Ok(FakeStream {
            data: self.data.clone(),
            at: 0,
            break_at: self.break_at,
        })
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        if self.fail_close {
            return Err("the snapshot command on openbao-0 exited with 2".into());
        }
        Ok(())
    }
}

/// What a [`MemoryStore`] holds, and what happened to it, in order.
#[derive(Default)]
pub struct Held {
    pub snapshots: BTreeMap<String, Vec<u8>>,
    pub manifests: BTreeMap<String, Manifest>,
    /// `upload x`, `commit x`, `abort x`, `manifest x`, `delete x`.
    pub events: Vec<String>,
    /// Uploads started and neither committed nor aborted.
    pub open_uploads: usize,
    /// Writes fail once an upload holds this many bytes.
    pub fail_write_at: Option<usize>,
    pub fail_commit: bool,
}

/// A folder in memory: `mem://snaps/`.
#[derive(Clone, Default)]
pub struct MemoryStore(pub Arc<Mutex<Held>>);

impl MemoryStore {
    pub fn held(&self) -> MutexGuard<'_, Held> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts a snapshot and, with `manifest`, its manifest.
    pub fn put(&self, name: &str, data: Vec<u8>, manifest: Option<Manifest>) {
        let mut held = self.held();
        held.snapshots.insert(name.to_owned(), data);
        if let Some(m) = manifest {
            held.manifests.insert(name.to_owned(), m);
        }
    }
}

/// An upload into a [`MemoryStore`].
pub struct MemoryUpload {
    store: MemoryStore,
    name: String,
    bytes: Vec<u8>,
}

impl SnapshotUpload for MemoryUpload {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        if let Some(at) = self.store.held().fail_write_at {
            if self.bytes.len() + bytes.len() > at {
                return Err(SnapshotError::Write {
                    object: format!("mem://snaps/{}", self.name),
                    reason: "the store went away".into(),
                });
            }
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    async fn finish(self) -> Result<(), SnapshotError> {
        let mut held = self.store.held();
        held.open_uploads -= 1;
        if held.fail_commit {
            held.events.push(format!("failed commit {}", self.name));
            return Err(SnapshotError::Write {
                object: format!("mem://snaps/{}", self.name),
                reason: "the commit was refused".into(),
            });
        }
        held.events.push(format!("commit {}", self.name));
        held.snapshots.insert(self.name, self.bytes);
        Ok(())
    }

    async fn abort(self) {
        let mut held = self.store.held();
        held.open_uploads -= 1;
        held.events.push(format!("abort {}", self.name));
    }
}

impl SnapshotStore for MemoryStore {
    type Upload = MemoryUpload;

    fn object(&self, name: &str) -> String {
        format!("mem://snaps/{name}")
    }

    fn name_for(&self, workload: &str, now: jiff::Timestamp) -> String {
        format!("{workload}-{}.snap", now.strftime("%Y%m%dT%H%M%SZ"))
    }

    async fn preflight_write(&self, name: &str) -> Result<Existing, SnapshotError> {
        Ok(match self.held().snapshots.contains_key(name) {
            true => Existing::Yes {
                object: self.object(name),
            },
            false => Existing::No,
        })
    }

    async fn upload(&self, name: &str) -> Result<MemoryUpload, SnapshotError> {
        let mut held = self.held();
        held.open_uploads += 1;
        held.events.push(format!("upload {name}"));
        Ok(MemoryUpload {
            store: self.clone(),
            name: name.to_owned(),
            bytes: vec![],
        })
    }

    async fn write_manifest(&self, manifest: &Manifest) -> Result<(), SnapshotError> {
        let mut held = self.held();
        held.events.push(format!("manifest {}", manifest.snapshot));
        held.manifests
            .insert(manifest.snapshot.clone(), manifest.clone());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Entry>, SnapshotError> {
        let held = self.held();
        let mut entries: Vec<Entry> = held
            .snapshots
            .iter()
            .map(|(name, data)| Entry {
                name: name.clone(),
                size: data.len() as u64,
                manifest: held.manifests.get(name).cloned(),
            })
            .collect();
        entries.sort_by(|a, b| {
            b.created()
                .cmp(&a.created())
                .then_with(|| b.name.cmp(&a.name))
        });
        Ok(entries)
    }

    async fn verify(&self, name: &str) -> Result<Manifest, SnapshotError> {
        let held = self.held();
        let object = self.object(name);
        let manifest =
            held.manifests
                .get(name)
                .cloned()
                .ok_or_else(|| SnapshotError::NoManifest {
                    object: object.clone(),
                    manifest: self.object(&manifest_name(name)),
                })?;
        let data = held.snapshots.get(name).cloned().unwrap_or_default();
        if sha256(&data) != manifest.sha256 {
            return Err(SnapshotError::ChecksumMismatch {
                object,
                expected: manifest.sha256,
                actual: sha256(&data),
            });
        }
        Ok(manifest)
    }

    async fn delete(&self, name: &str) -> Result<(), SnapshotError> {
        let mut held = self.held();
        held.events.push(format!("delete {name}"));
        held.manifests.remove(name);
        held.snapshots.remove(name);
        Ok(())
    }
}
