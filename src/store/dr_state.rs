//! Where the DR state lives: `dr-state.json` beside the group's snapshots,
//! in a local folder or an S3 bucket prefix, written only conditionally.
//!
//! Owns the two conditional-write schemes behind
//! [`crate::ops::dr::state::StateStore`], and the create-only epoch claims
//! (`dr-epochs/N.json`) that decide who takes an epoch even where a store
//! ignores If-Match (moto 5 does, on PutObject):
//! - S3: `PutMode::Create` (If-None-Match) and `PutMode::Update` (If-Match
//!   with the ETag that was read).
//! - A folder: an exclusive lock file (`O_EXCL`) around
//!   read-compare-write; the write is a temporary file renamed over the
//!   object, so a reader never sees half a document. A lock whose holder
//!   process is gone (same host) or that is older than [`STALE_LOCK`] is
//!   broken by renaming it away first, so two runs cannot both break it.

use crate::ops::dr::state::{
    DrState, EpochClaim, StateError, StateStore, StateVersion, Versioned, STATE_OBJECT,
};
use crate::snapshot::location::Location;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the epoch claims live, beside the state.
const CLAIMS: &str = "dr-epochs";

/// A folder lock older than this is broken.
pub const STALE_LOCK: Duration = Duration::from_secs(30);
/// How long a folder write waits for the lock.
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// The DR state of a snapshot location.
pub enum SharedState {
    Folder(FolderState),
    Bucket(BucketState),
}

impl SharedState {
    /// The state object of `location` (a folder or bucket prefix; a single
    /// snapshot file is refused by the caller).
    pub fn of(location: &Location) -> Option<SharedState> {
        match location {
            Location::Dir { path } => Some(SharedState::Folder(FolderState { dir: path.clone() })),
            Location::Bucket {
                url, store, prefix, ..
            } => Some(SharedState::Bucket(BucketState {
                url: url.clone(),
                store: store.clone(),
                path: if prefix.as_ref().is_empty() {
                    ObjectPath::from(STATE_OBJECT)
                } else {
                    prefix.clone().join(STATE_OBJECT)
                },
            })),
            Location::File { .. } => None,
        }
    }
}

impl StateStore for SharedState {
    fn object(&self) -> String {
        match self {
            SharedState::Folder(f) => f.object(),
            SharedState::Bucket(b) => b.object(),
        }
    }
    async fn load(&self) -> Result<Option<Versioned>, StateError> {
        match self {
            SharedState::Folder(f) => f.load().await,
            SharedState::Bucket(b) => b.load().await,
        }
    }
    async fn create(&self, state: &DrState) -> Result<Versioned, StateError> {
        match self {
            SharedState::Folder(f) => f.create(state).await,
            SharedState::Bucket(b) => b.create(state).await,
        }
    }
    async fn claim(&self, claim: &EpochClaim) -> Result<(), StateError> {
        match self {
            SharedState::Folder(f) => f.claim(claim).await,
            SharedState::Bucket(b) => b.claim(claim).await,
        }
    }
    async fn read_claim(&self, epoch: u64) -> Result<Option<EpochClaim>, StateError> {
        match self {
            SharedState::Folder(f) => f.read_claim(epoch).await,
            SharedState::Bucket(b) => b.read_claim(epoch).await,
        }
    }
    async fn update(
        &self,
        state: &DrState,
        expected: &StateVersion,
    ) -> Result<Versioned, StateError> {
        match self {
            SharedState::Folder(f) => f.update(state, expected).await,
            SharedState::Bucket(b) => b.update(state, expected).await,
        }
    }
}

fn parse(object: &str, bytes: &[u8]) -> Result<DrState, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        object: object.to_owned(),
        reason: e.to_string(),
    })
}

fn render(state: &DrState) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

pub struct FolderState {
    dir: PathBuf,
}

impl FolderState {
    fn path(&self) -> PathBuf {
        self.dir.join(STATE_OBJECT)
    }

    fn object(&self) -> String {
        self.path().display().to_string()
    }

    fn unavailable(&self, verb: &'static str, e: impl std::fmt::Display) -> StateError {
        StateError::Unavailable {
            object: self.object(),
            verb,
            reason: e.to_string(),
        }
    }

    fn read(&self) -> Result<Option<Versioned>, StateError> {
        match std::fs::read(self.path()) {
            Ok(bytes) => {
                let state = parse(&self.object(), &bytes)?;
                Ok(Some(Versioned {
                    version: StateVersion {
                        revision: state.revision,
                        e_tag: None,
                    },
                    state,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.unavailable("read", e)),
        }
    }

    async fn load(&self) -> Result<Option<Versioned>, StateError> {
        self.read()
    }

    async fn create(&self, state: &DrState) -> Result<Versioned, StateError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| self.unavailable("create the folder of", e))?;
        let _lock = self.lock().await?;
        if self.read()?.is_some() {
            return Err(StateError::Conflict {
                object: self.object(),
            });
        }
        self.write(state)
    }

    async fn update(
        &self,
        state: &DrState,
        expected: &StateVersion,
    ) -> Result<Versioned, StateError> {
        let _lock = self.lock().await?;
        match self.read()? {
            Some(current) if current.version.revision == expected.revision => self.write(state),
            _ => Err(StateError::Conflict {
                object: self.object(),
            }),
        }
    }

    fn claim_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(CLAIMS).join(format!("{epoch}.json"))
    }

    /// Writes the claim to a temporary file, then hard-links it into place:
    /// the link fails when the claim exists, and a reader never sees half.
    async fn claim(&self, claim: &EpochClaim) -> Result<(), StateError> {
        let dir = self.dir.join(CLAIMS);
        std::fs::create_dir_all(&dir).map_err(|e| self.unavailable("claim an epoch in", e))?;
        let tmp = dir.join(private_name(&format!("{}.json", claim.epoch)));
        let bytes = serde_json::to_vec(claim).unwrap_or_default();
        write_new(&tmp, &bytes).map_err(|e| self.unavailable("claim an epoch in", e))?;
        let linked = std::fs::hard_link(&tmp, self.claim_path(claim.epoch));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StateError::Conflict {
                object: self.claim_path(claim.epoch).display().to_string(),
            }),
            Err(e) => Err(self.unavailable("claim an epoch in", e)),
        }
    }

    async fn read_claim(&self, epoch: u64) -> Result<Option<EpochClaim>, StateError> {
        let path = self.claim_path(epoch);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        object: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.unavailable("read an epoch claim in", e)),
        }
    }

    fn write(&self, state: &DrState) -> Result<Versioned, StateError> {
        fail::fail_point!("dr_state::folder_write", |_| Err(
            self.unavailable("write", "injected failure")
        ));
        let tmp = self.dir.join(private_name(STATE_OBJECT));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| self.unavailable("write", e))?;
        file.write_all(&render(state))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.unavailable("write", e))?;
        std::fs::rename(&tmp, self.path()).map_err(|e| self.unavailable("write", e))?;
        Ok(Versioned {
            state: state.clone(),
            version: StateVersion {
                revision: state.revision,
                e_tag: None,
            },
        })
    }

    async fn lock(&self) -> Result<FolderLock, StateError> {
        let path = self.dir.join(format!("{STATE_OBJECT}.lock"));
        let holder = format!("{}\n", crate::cmd::holder_identity());
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = f.write_all(holder.as_bytes());
                    return Ok(FolderLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if lock_is_stale(&path) {
                        let aside = self.dir.join(private_name(&format!("{STATE_OBJECT}.lock")));
                        if std::fs::rename(&path, &aside).is_ok() {
                            tracing::warn!(lock = %path.display(), "broke a stale DR state lock");
                            let _ = std::fs::remove_file(&aside);
                        }
                        continue;
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(self.unavailable(
                            "lock",
                            format!("{} is held by another run", path.display()),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => return Err(self.unavailable("lock", e)),
            }
        }
    }
}

/// A temporary name for `object` that no other run, and no other task of
/// this run, uses: the process id alone is shared by every task of a run
/// (a claim written through a shared temporary file once carried another
/// task's name into the winning claim).
fn private_name(object: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{object}.{}.{n}.tmp", std::process::id())
}

/// Writes `bytes` to a file that must not exist yet.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes).and_then(|()| file.sync_all())
}

/// A lock whose holder (`kubectl-vault@host/pid`) ran on this host and is
/// gone, or that is older than [`STALE_LOCK`].
fn lock_is_stale(path: &std::path::Path) -> bool {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_LOCK);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    old || crate::ops::dr::holder_gone(text.trim())
}

/// Removes the lock file when dropped.
struct FolderLock {
    path: PathBuf,
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct BucketState {
    url: String,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
}

impl BucketState {
    fn object(&self) -> String {
        format!(
            "{}{STATE_OBJECT}",
            self.url.trim_end_matches('/').to_owned() + "/"
        )
    }

    fn unavailable(&self, verb: &'static str, e: impl std::fmt::Display) -> StateError {
        StateError::Unavailable {
            object: self.object(),
            verb,
            reason: e.to_string(),
        }
    }

    async fn load(&self) -> Result<Option<Versioned>, StateError> {
        let got = match self.store.get(&self.path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.unavailable("read", e)),
        };
        let e_tag = got.meta.e_tag.clone();
        let bytes = got.bytes().await.map_err(|e| self.unavailable("read", e))?;
        let state = parse(&self.object(), &bytes)?;
        Ok(Some(Versioned {
            version: StateVersion {
                revision: state.revision,
                e_tag,
            },
            state,
        }))
    }

    async fn put(&self, state: &DrState, mode: PutMode) -> Result<Versioned, StateError> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path, PutPayload::from(render(state)), opts)
            .await
        {
            Ok(put) => Ok(Versioned {
                state: state.clone(),
                version: StateVersion {
                    revision: state.revision,
                    e_tag: put.e_tag,
                },
            }),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(StateError::Conflict {
                object: self.object(),
            }),
            Err(e) => Err(self.unavailable("write", e)),
        }
    }

    async fn create(&self, state: &DrState) -> Result<Versioned, StateError> {
        self.put(state, PutMode::Create).await
    }

    fn claim_path(&self, epoch: u64) -> ObjectPath {
        let mut parts: Vec<_> = self.path.parts().collect();
        parts.pop();
        ObjectPath::from_iter(parts)
            .join(CLAIMS)
            .join(format!("{epoch}.json"))
    }

    async fn claim(&self, claim: &EpochClaim) -> Result<(), StateError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let bytes = serde_json::to_vec(claim).unwrap_or_default();
        match self
            .store
            .put_opts(&self.claim_path(claim.epoch), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(StateError::Conflict {
                object: self.claim_path(claim.epoch).to_string(),
            }),
            Err(e) => Err(self.unavailable("claim an epoch in", e)),
        }
    }

    async fn read_claim(&self, epoch: u64) -> Result<Option<EpochClaim>, StateError> {
        let got = match self.store.get(&self.claim_path(epoch)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.unavailable("read an epoch claim in", e)),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.unavailable("read an epoch claim in", e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                object: self.claim_path(epoch).to_string(),
                reason: e.to_string(),
            })
    }

    async fn update(
        &self,
        state: &DrState,
        expected: &StateVersion,
    ) -> Result<Versioned, StateError> {
        self.put(
            state,
            PutMode::Update(UpdateVersion {
                e_tag: expected.e_tag.clone(),
                version: None,
            }),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dr::state::{load_or_create, take_epoch, Decision, TakeEpochError};

    fn decision() -> Decision {
        Decision {
            at: "t".into(),
            epoch: 0,
            from: "east".into(),
            chosen: "west".into(),
            by: "auto".into(),
            scores: vec![],
        }
    }

    /// Many runs race from one read: exactly one takes the epoch, in the folder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn in_a_folder_exactly_one_of_many_racing_runs_takes_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SharedState::Folder(FolderState {
            dir: dir.path().to_path_buf(),
        }));
        let seen = load_or_create(&*store, "prod", "east").await.unwrap();
        let runs = (0..8).map(|i| {
            let store = store.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                take_epoch(&*store, &seen, &format!("c{i}"), "h", decision()).await
            })
        });
        let results = futures::future::join_all(runs).await;
        let won: Vec<_> = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).collect();
        assert_eq!(won.len(), 1);
        let state = store.load().await.unwrap().unwrap().state;
        assert_eq!(state.epoch, 2);
        for r in results {
            if let Ok(Err(TakeEpochError::Lost(l))) = r {
                assert_eq!(l.winner, state.failover.as_ref().unwrap().to);
            }
        }
        assert!(!dir.path().join("dr-state.json.lock").exists());
    }

    #[tokio::test]
    async fn a_stale_lock_of_a_gone_process_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedState::Folder(FolderState {
            dir: dir.path().to_path_buf(),
        });
        let host = crate::cmd::holder_identity();
        let host = host.rsplit_once('/').unwrap().0;
        // A pid far above pid_max: no such process.
        std::fs::write(
            dir.path().join("dr-state.json.lock"),
            format!("{host}/99999999\n"),
        )
        .unwrap();
        let v = load_or_create(&store, "prod", "east").await.unwrap();
        assert_eq!(v.state.primary, "east");
    }
}
