//! Where a saved snapshot comes from: the seam between the save and the node
//! that streams its raft snapshot.

use std::future::Future;
use tokio::io::AsyncRead;

/// Why a source could not describe itself or stream: the implementation's
/// own typed error, whose message and causes reach the user as they are.
/// Never carries a token.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// What the manifest records of where a snapshot came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// `sys/seal-status` cluster_id.
    pub cluster_id: String,
    pub server_version: String,
    /// How the cluster unseals (`shamir`, `static`, `transit`, ...).
    pub seal: String,
    /// The raft committed index just before the save, when the node says.
    pub raft_index: Option<u64>,
    /// The node (pod) the snapshot streams from.
    pub pod: String,
}

/// The active node's raft snapshot.
pub trait SnapshotSource: Send {
    type Stream: AsyncRead + Unpin + Send;

    /// Reads what the manifest records (before anything streams).
    fn origin(&mut self) -> impl Future<Output = Result<Origin, SourceError>> + Send;

    /// Opens the snapshot stream.
    fn open(&mut self) -> impl Future<Output = Result<Self::Stream, SourceError>> + Send;

    /// After the stream was read (to its end or not) and dropped: how its
    /// producer ended. An error here wins over what the stream said.
    fn close(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;
}
