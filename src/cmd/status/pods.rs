//! One pod's line of the status: what its server says (or why it does not
//! answer), merged with what the pod object says, and whether its seal
//! provider failed it at start (its server log says so).

use super::PeerStatus;
use crate::ops::status::NodeObservation;
use crate::transport::discover::PodInfo;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PodStatus {
    pub name: String,
    pub ready: bool,
    pub phase: String,
    pub restarts: i32,
    pub initialized: Option<bool>,
    pub sealed: Option<bool>,
    /// `shamir`, or the auto-unseal provider the pod names (`static`, `transit`, ...).
    pub seal: Option<String>,
    pub unseal_progress: Option<String>,
    pub raft_role: Option<String>,
    pub voter: Option<bool>,
    pub version: Option<String>,
    /// How the plugin reached the pod (`direct` or `exec`).
    pub transport: Option<crate::transport::pod::Used>,
    pub error: Option<String>,
    /// The server does not run because its seal provider failed it.
    pub seal_provider_failure: Option<crate::ops::seal::ProviderFailure>,
}

impl PodStatus {
    /// Initialized, sealed, and unsealing itself through a provider: the
    /// provider is unreachable or refusing (or the pod is a moment from
    /// unsealing itself after a restart).
    pub(super) fn sealed_by_its_provider(&self) -> bool {
        self.sealed == Some(true)
            && self.initialized == Some(true)
            && self.seal.as_deref().is_some_and(|k| k != "shamir")
    }
}

pub(super) fn pod_status(
    info: &PodInfo,
    transport: Option<crate::transport::pod::Used>,
    obs: Option<&NodeObservation>,
    peers: Option<&[PeerStatus]>,
    leader: Option<&str>,
    standalone: bool,
) -> PodStatus {
    let seal = obs.and_then(|o| o.seal.as_ref());
    let peer = peers
        .and_then(|p| {
            p.iter()
                .find(|p| p.pod.as_deref() == Some(info.name.as_str()))
        })
        .map(|p| &p.peer);
    let role = match (peer, seal) {
        (_, Some(s)) if standalone && s.initialized && !s.sealed => Some("standalone".to_owned()),
        (Some(p), _) if p.leader => Some("leader".to_owned()),
        (Some(_), _) => Some("follower".to_owned()),
        (None, Some(s)) if !s.sealed && leader == Some(info.name.as_str()) => {
            Some("leader".to_owned())
        }
        (None, Some(s)) if !s.sealed && leader.is_some() => Some("follower".to_owned()),
        _ => None,
    };
    PodStatus {
        name: info.name.clone(),
        ready: info.ready,
        phase: info.phase.clone(),
        restarts: info.restarts,
        initialized: seal.map(|s| s.initialized),
        sealed: seal.map(|s| s.sealed),
        seal: seal.map(|s| s.seal().name().to_owned()),
        unseal_progress: seal
            .filter(|s| s.sealed && s.threshold > 0 && !s.auto_unseal())
            .map(|s| format!("{}/{}", s.progress, s.threshold)),
        raft_role: role,
        voter: peer.map(|p| p.voter),
        version: seal.map(|s| s.version.clone()),
        transport,
        error: obs.and_then(|o| o.error.clone()),
        seal_provider_failure: None,
    }
}

/// Whether `pod`'s server log says its seal provider failed it at start:
/// the current container's (it exited), else the previous one's (the last
/// crash, while the next start is under way).
pub async fn seal_provider_failure(
    cluster: &crate::transport::discover::KubeCluster,
    pod: &str,
) -> Option<crate::ops::seal::ProviderFailure> {
    let (previous, current) = cluster.server_log_tails(pod, 20).await;
    [current, previous]
        .iter()
        .flatten()
        .find_map(|t| crate::ops::seal::provider_failure(t))
}

/// For each pod whose server does not answer: whether its log says its
/// seal provider failed it at start (the server exits, the pod crash-loops).
pub async fn seal_provider_failures(
    cluster: &crate::transport::discover::KubeCluster,
    observations: &[NodeObservation],
) -> Vec<(String, crate::ops::seal::ProviderFailure)> {
    let unreachable = observations.iter().filter(|o| o.seal.is_none());
    let reads = unreachable.map(|o| async move {
        seal_provider_failure(cluster, &o.pod)
            .await
            .map(|f| (o.pod.clone(), f))
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}
