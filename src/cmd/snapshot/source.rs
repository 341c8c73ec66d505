//! The active pod as a [`SnapshotSource`]: `GET sys/storage/raft/snapshot`
//! through the direct transport, or `operator raft snapshot save
//! /dev/stdout` through exec when this command uses exec (or port-forward
//! turned out unavailable under `auto`, before anything was sent).
//!
//! Owns how the stream is opened and how its producer ended; what the
//! stream becomes is `ops::snapshot_save`'s.

use crate::ops::node::{seal_status, NodeError, Request, VaultNode};
use crate::ops::secret::Secret;
use crate::ops::snapshot_save::{Origin, SnapshotSource, SourceError};
use crate::output::log::Transfer;
use crate::transport::direct::Opened;
use crate::transport::exec::{parse_cli_error, StreamStdin, Streaming};
use crate::transport::pod::PodNode;
use tokio::io::AsyncRead;

use super::token_line;

/// The active pod, and the exec stream it is producing, if any.
pub(super) struct ActivePod {
    node: PodNode,
    token: Secret,
    exec: Option<Streaming>,
}

/// Why the pod's stream failed. Names the pod, never the token.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("could not stream a snapshot from pod {pod}; nothing was kept")]
    Download { pod: String, source: NodeError },
    #[error("`operator raft snapshot save` on pod {pod} failed: {reason}; nothing was kept")]
    Exited { pod: String, reason: NodeError },
    #[error("nothing was kept")]
    Broke(#[source] NodeError),
}

impl ActivePod {
    /// `node` must be the active node; `token` authorizes the snapshot.
    pub(super) fn new(node: PodNode, token: Secret) -> Self {
        ActivePod {
            node,
            token,
            exec: None,
        }
    }

    /// The stream through exec; its exit is read by [`SnapshotSource::close`].
    async fn open_exec(&mut self) -> Result<Box<dyn AsyncRead + Send + Unpin>, SourceError> {
        let exec = self.node.exec();
        let argv = exec.with_token_argv(&["operator", "raft", "snapshot", "save", "/dev/stdout"]);
        let mut streaming = exec
            .stream(
                argv,
                StreamStdin::<tokio::io::Empty> {
                    first_line: Some(token_line(&self.token)),
                    body: None,
                },
                true,
            )
            .await?;
        let stdout = streaming.stdout.take();
        self.exec = Some(streaming);
        Ok(match stdout {
            Some(stdout) => Box::new(Transfer::start("snapshot", None).reader(stdout)),
            // Nothing to read: the pump refuses an empty stream.
            None => Box::new(tokio::io::empty()),
        })
    }
}

impl SnapshotSource for ActivePod {
    type Stream = Box<dyn AsyncRead + Send + Unpin>;

    async fn origin(&mut self) -> Result<Origin, SourceError> {
        let status = seal_status(&self.node).await?;
        let raft_index = self
            .node
            .call(Request::read("sys/leader"))
            .await
            .ok()
            .and_then(|v| {
                v.get("raft_committed_index")
                    .and_then(serde_json::Value::as_u64)
            });
        Ok(Origin {
            seal: status.seal().name().to_owned(),
            cluster_id: status.cluster_id,
            server_version: status.version,
            raft_index,
            pod: self.node.name().to_owned(),
        })
    }

    async fn open(&mut self) -> Result<Self::Stream, SourceError> {
        let Some(direct) = self.node.direct() else {
            return self.open_exec().await;
        };
        match direct
            .link()
            .download("sys/storage/raft/snapshot", &self.token)
            .await
        {
            Ok(reader) => Ok(Box::new(Transfer::start("snapshot", None).reader(reader))),
            Err(Opened::Unavailable(reason)) => {
                self.node.unavailable(reason)?;
                self.open_exec().await
            }
            Err(Opened::Failed(source)) => Err(Box::new(StreamError::Download {
                pod: self.node.name().to_owned(),
                source,
            })),
        }
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        let Some(streaming) = self.exec.take() else {
            return Ok(());
        };
        match streaming.wait().await {
            Ok((0, _, _)) => Ok(()),
            Ok((code, _, stderr)) => Err(Box::new(StreamError::Exited {
                pod: self.node.name().to_owned(),
                reason: parse_cli_error(&stderr, code),
            })),
            Err(e) => Err(Box::new(StreamError::Broke(e))),
        }
    }
}
