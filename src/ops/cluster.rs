//! The set of servers an operation works on.
//!
//! Owns the [`VaultCluster`] seam: which nodes exist now, how many the
//! workload wants, and waiting for one that does not exist yet (OrderedReady
//! workloads create pods one at a time). Finding pods is the transport's job.

use crate::ops::node::VaultNode;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no pods match {selector} in namespace {namespace}")]
    NoPods { selector: String, namespace: String },
    #[error("pod {pod} did not appear within {waited:?}")]
    PodMissing { pod: String, waited: Duration },
    #[error("not allowed to {action}: {reason}")]
    Forbidden { action: String, reason: String },
    #[error("could not list pods: {0}")]
    List(String),
    /// A request to the cluster's API failed; the source says how, and the
    /// command layer turns it into a sentence with a hint.
    #[error("could not {action}")]
    Api {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub trait VaultCluster: Send + Sync {
    type Node: VaultNode + Clone + 'static;

    /// How many servers the workload wants.
    fn replicas(&self) -> usize;

    /// The servers that exist now, ordered by ordinal.
    fn nodes(&self) -> impl Future<Output = Result<Vec<Self::Node>, ClusterError>> + Send;

    /// The ordinals that must answer before anyone may conclude that the
    /// cluster holds no data (init's "fresh cluster"). By default every
    /// replica. A workload that creates its pods one at a time, each only
    /// once the previous one is Ready (which an uninitialized server never
    /// is), answers with the pods that exist in any phase instead.
    fn must_answer(&self) -> impl Future<Output = Result<Vec<usize>, ClusterError>> + Send {
        let all = (0..self.replicas()).collect();
        async move { Ok(all) }
    }

    /// Waits until the server with `ordinal` exists.
    fn wait_for_node(
        &self,
        ordinal: usize,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Node, ClusterError>> + Send;
}
