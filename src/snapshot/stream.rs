//! Hashing bytes as they pass: a reader wrapper for restore and verify, and
//! the pump that copies a pod's stdout into an upload (any
//! [`SnapshotUpload`]: a [`crate::snapshot::location::Upload`], or a test's).

use crate::ops::snapshot_save::SnapshotUpload;
use crate::snapshot::{SnapshotError, MIN_SNAPSHOT_BYTES};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// How many bytes one read moves. Memory per stream stays near this.
pub const CHUNK: usize = 256 * 1024;

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a finished stream hashed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digested {
    pub sha256: String,
    pub size: u64,
}

/// A reader that hashes and counts what passes through it; the result is
/// readable through the shared [`HashProbe`] after the reader was moved away
/// (into an exec's stdin feeder).
pub struct HashingReader<R> {
    inner: R,
    state: Arc<Mutex<(Sha256, u64)>>,
}

/// The other end of a [`HashingReader`].
#[derive(Clone)]
pub struct HashProbe(Arc<Mutex<(Sha256, u64)>>);

impl HashProbe {
    pub fn digest(&self) -> Digested {
        let guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Digested {
            sha256: hex(&guard.0.clone().finalize()),
            size: guard.1,
        }
    }
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> (Self, HashProbe) {
        let state = Arc::new(Mutex::new((Sha256::new(), 0)));
        (
            HashingReader {
                inner,
                state: state.clone(),
            },
            HashProbe(state),
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let fresh = &buf.filled()[before..];
            let mut guard = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.0.update(fresh);
            guard.1 += fresh.len() as u64;
        }
        poll
    }
}

/// How many bytes a [`VerifyingReader`] holds back until the whole stream
/// has hashed to the expected digest. More than a gzip trailer (8 bytes), so
/// a server never receives a complete snapshot whose bytes differ.
pub const HOLD_BACK: usize = 64 * 1024;

/// A reader that hashes what passes and releases the last [`HOLD_BACK`]
/// bytes only once the whole stream matched `expected`: the bytes hashed
/// are the bytes a restore receives, and a stream that differs ends short
/// (an error instead of its tail), so the server never commits it.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    expected: Digested,
    window: std::collections::VecDeque<u8>,
    scratch: Vec<u8>,
    eof: bool,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

/// Tells whether a [`VerifyingReader`] withheld its tail.
#[derive(Clone)]
pub struct CutProbe(Arc<std::sync::atomic::AtomicBool>);

impl CutProbe {
    /// True when the stream differed from the expected digest and its tail
    /// was withheld.
    pub fn was_cut(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<R> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digested) -> (Self, CutProbe) {
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (
            VerifyingReader {
                inner,
                hasher: Sha256::new(),
                size: 0,
                expected,
                window: std::collections::VecDeque::with_capacity(HOLD_BACK + CHUNK),
                scratch: vec![0u8; 64 * 1024],
                eof: false,
                cut: cut.clone(),
            },
            CutProbe(cut),
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            let releasable = if this.eof {
                this.window.len()
            } else {
                this.window.len().saturating_sub(HOLD_BACK)
            };
            if releasable > 0 && buf.remaining() > 0 {
                let (front, _) = this.window.as_slices();
                let n = releasable.min(front.len()).min(buf.remaining());
                buf.put_slice(&front[..n]);
                this.window.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let got = rb.filled();
            if got.is_empty() {
                let actual = hex(&this.hasher.clone().finalize());
                if this.size != this.expected.size
                    || !actual.eq_ignore_ascii_case(&this.expected.sha256)
                {
                    this.cut.store(true, std::sync::atomic::Ordering::SeqCst);
                    this.window.clear();
                    return Poll::Ready(Err(std::io::Error::other(format!(
                        "the snapshot changed since it was verified ({} bytes, sha256 {actual}); its end was withheld",
                        this.size
                    ))));
                }
                this.eof = true;
            } else {
                this.hasher.update(got);
                this.size += got.len() as u64;
                this.window.extend(got.iter().copied());
            }
        }
    }
}

/// Reads `reader` to its end, hashing and counting. Constant memory.
pub async fn digest(
    mut reader: impl AsyncRead + Unpin,
    object: &str,
) -> Result<Digested, SnapshotError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| SnapshotError::Read {
                object: object.to_owned(),
                reason: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Digested {
        sha256: hex(&hasher.finalize()),
        size,
    })
}

/// Copies `reader` into `upload`, hashing as it goes. Refuses (without
/// finishing the upload) a stream that is short or does not start like a
/// gzip raft snapshot; the caller aborts the upload then.
pub async fn pump(
    mut reader: impl AsyncRead + Unpin,
    upload: &mut impl SnapshotUpload,
) -> Result<Digested, SnapshotError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut head = [0u8; 2];
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| SnapshotError::Read {
                object: "the snapshot stream from the pod".into(),
                reason: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().take(2).enumerate() {
            let at = size as usize + i;
            if at < 2 {
                head[at] = *b;
            }
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        upload.write(&buf[..n]).await?;
        // Tests break the stream here, after a chosen number of chunks
        // (`FAILPOINTS=snapshot::stream_chunk=40*off->return`), to prove
        // that a save whose stream fails leaves nothing visible.
        fail::fail_point!("snapshot::stream_chunk", |_| Err(SnapshotError::Read {
            object: "the snapshot stream from the pod".into(),
            reason: "broken by the snapshot::stream_chunk failpoint".into(),
        }));
    }
    if size < MIN_SNAPSHOT_BYTES {
        return Err(SnapshotError::Short { size });
    }
    if head != [0x1f, 0x8b] {
        return Err(SnapshotError::NotASnapshot);
    }
    Ok(Digested {
        sha256: hex(&hasher.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pump_into_dir(data: &[u8]) -> (Result<Digested, SnapshotError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let location =
            crate::snapshot::location::Location::parse(&format!("{}/", dir.path().display()))
                .unwrap();
        let mut upload = location.upload("x.snap").await.unwrap();
        let result = pump(data, &mut upload).await;
        upload.abort().await;
        (result, dir)
    }

    #[tokio::test]
    async fn empty_short_and_foreign_streams_are_refused_and_leave_nothing() {
        let (r, dir) = pump_into_dir(b"").await;
        assert!(matches!(r, Err(SnapshotError::Short { size: 0 })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut short = vec![0x1f, 0x8b];
        short.resize(100, 0);
        assert!(matches!(
            pump_into_dir(&short).await.0,
            Err(SnapshotError::Short { size: 100 })
        ));
        let text = vec![b'x'; 4096];
        assert!(matches!(
            pump_into_dir(&text).await.0,
            Err(SnapshotError::NotASnapshot)
        ));
        let mut gzip = vec![0x1f, 0x8b];
        gzip.resize(4096, 7);
        assert_eq!(pump_into_dir(&gzip).await.0.unwrap().size, 4096);
    }

    /// Hands out at most `step` bytes per read, then `fail` if set.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        fail: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            if this.at == this.data.len() {
                if this.fail {
                    return Poll::Ready(Err(std::io::Error::other("the pod went away")));
                }
                return Poll::Ready(Ok(()));
            }
            let n = this
                .step
                .min(this.data.len() - this.at)
                .min(buf.remaining());
            buf.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn snapshot_bytes(len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8).collect();
        data[0] = 0x1f;
        data[1] = 0x8b;
        data
    }

    #[tokio::test]
    async fn a_long_stream_in_small_reads_arrives_whole_and_hashed() {
        let data = snapshot_bytes(3 * CHUNK + 12_345);
        let dir = tempfile::tempdir().unwrap();
        let location =
            crate::snapshot::location::Location::parse(&format!("{}/", dir.path().display()))
                .unwrap();
        let mut upload = location.upload("x.snap").await.unwrap();
        let reader = Trickle {
            data: data.clone(),
            at: 0,
            step: 7_001,
            fail: false,
        };
        let got = pump(reader, &mut upload).await.unwrap();
        upload.finish().await.unwrap();
        assert_eq!(got, digest(&data[..], "x").await.unwrap());
        assert_eq!(std::fs::read(dir.path().join("x.snap")).unwrap(), data);
    }

    #[tokio::test]
    async fn a_stream_that_breaks_is_a_read_error_whatever_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let location =
            crate::snapshot::location::Location::parse(&format!("{}/", dir.path().display()))
                .unwrap();
        let mut upload = location.upload("x.snap").await.unwrap();
        let reader = Trickle {
            data: snapshot_bytes(2 * CHUNK),
            at: 0,
            step: 65_536,
            fail: true,
        };
        let got = pump(reader, &mut upload).await;
        assert!(
            matches!(&got, Err(SnapshotError::Read { reason, .. }) if reason.contains("went away")),
            "{got:?}"
        );
        upload.abort().await;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_verifying_reader_withholds_the_tail_of_a_stream_that_differs() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = digest(&data[..], "x").await.unwrap();
        let (mut r, cut) = VerifyingReader::new(&data[..], expected.clone());
        let mut sink = Vec::new();
        tokio::io::copy(&mut r, &mut sink).await.unwrap();
        assert_eq!(sink, data);
        assert!(!cut.was_cut());

        let mut changed = data.clone();
        changed[1000] ^= 1;
        let (mut r, cut) = VerifyingReader::new(&changed[..], expected);
        let mut sink = Vec::new();
        assert!(tokio::io::copy(&mut r, &mut sink).await.is_err());
        assert!(cut.was_cut());
        assert!(sink.len() <= changed.len() - HOLD_BACK, "{}", sink.len());
    }

    #[tokio::test]
    async fn the_hashing_reader_sees_every_byte() {
        let data = vec![7u8; 300_000];
        let (mut r, probe) = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        tokio::io::copy(&mut r, &mut sink).await.unwrap();
        let d = probe.digest();
        assert_eq!(d.size, 300_000);
        assert_eq!(d, digest(&data[..], "x").await.unwrap());
        assert_eq!(d.sha256, hex(&Sha256::digest(&data)));
    }
}
