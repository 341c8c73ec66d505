//! A snapshot being written: a `.partial` file renamed into place, a
//! multipart (block) upload, or a GCS resumable upload; nothing is visible
//! under its name until [`Upload::finish`].

use crate::snapshot::resumable::Resumable;
use crate::snapshot::SnapshotError;
use object_store::buffered::BufWriter;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// A snapshot being written.
pub enum Upload {
    File {
        object: String,
        file: tokio::io::BufWriter<tokio::fs::File>,
        partial: PathBuf,
        path: PathBuf,
    },
    Multipart {
        object: String,
        writer: BufWriter,
    },
    /// GCS: a resumable upload through the JSON API.
    Resumable {
        object: String,
        writer: Resumable,
    },
}

impl Upload {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        match self {
            Upload::File { object, file, .. } => {
                file.write_all(bytes)
                    .await
                    .map_err(|e| SnapshotError::Write {
                        object: object.clone(),
                        reason: e.to_string(),
                    })
            }
            Upload::Resumable { object, writer } => {
                writer
                    .write(bytes)
                    .await
                    .map_err(|reason| SnapshotError::Write {
                        object: object.clone(),
                        reason,
                    })
            }
            Upload::Multipart { object, writer } => {
                writer
                    .write_all(bytes)
                    .await
                    .map_err(|e| SnapshotError::Write {
                        object: object.clone(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Makes the snapshot visible under its name.
    pub async fn finish(self) -> Result<(), SnapshotError> {
        match self {
            Upload::File {
                object,
                mut file,
                partial,
                path,
            } => {
                let err = |e: std::io::Error| SnapshotError::Write {
                    object: object.clone(),
                    reason: e.to_string(),
                };
                file.flush().await.map_err(err)?;
                file.get_ref().sync_all().await.map_err(err)?;
                drop(file);
                tokio::fs::rename(&partial, &path).await.map_err(err)
            }
            Upload::Multipart { object, mut writer } => {
                writer.shutdown().await.map_err(|e| SnapshotError::Write {
                    object,
                    reason: e.to_string(),
                })
            }
            Upload::Resumable { object, writer } => writer
                .finish()
                .await
                .map_err(|reason| SnapshotError::Write { object, reason }),
        }
    }

    /// Drops what was written; logs (does not fail) when cleanup fails.
    pub async fn abort(self) {
        match self {
            Upload::File { file, partial, .. } => {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
            }
            Upload::Multipart { object, mut writer } => {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(%object, error = %e, "could not abort the multipart upload");
                }
            }
            Upload::Resumable { object, writer } => {
                if let Err(error) = writer.abort().await {
                    tracing::warn!(%object, %error, "could not cancel the resumable upload");
                }
            }
        }
    }
}
