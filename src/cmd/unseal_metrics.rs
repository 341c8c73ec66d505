//! What `unseal --watch` tells Prometheus after each pass: every pod's seal
//! and raft state, the unseal attempts and failures, the stored key
//! generation and whether an interrupted operation's checkpoint waits.

use crate::metrics::Registry;
use crate::ops::cluster::VaultCluster;
use crate::ops::node::{raft_peers, Request, VaultNode};
use crate::ops::status::observe;
use crate::ops::store::CredentialStore;
use crate::transport::discover::KubeCluster;

const POD_UP: &str = "kubectl_vault_pod_up";
const POD_SEALED: &str = "kubectl_vault_pod_sealed";
const POD_INITIALIZED: &str = "kubectl_vault_pod_initialized";
const POD_LEADER: &str = "kubectl_vault_pod_leader";
const RAFT_VOTER: &str = "kubectl_vault_raft_voter";
const FAILURE_TOLERANCE: &str = "kubectl_vault_raft_failure_tolerance";
const ATTEMPTS: &str = "kubectl_vault_unseal_attempts_total";
const FAILURES: &str = "kubectl_vault_unseal_failures_total";
const GENERATION: &str = "kubectl_vault_credentials_generation";
const CHECKPOINT: &str = "kubectl_vault_checkpoint_present";
const CHECKPOINT_UPDATED: &str = "kubectl_vault_checkpoint_updated_timestamp_seconds";
const PASSES: &str = "kubectl_vault_watch_passes_total";

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// One pass's unseal results: `(pod, result, failed)`. A pod that was
/// already unsealed was not an attempt.
pub(crate) fn record_results<'a>(
    registry: &Registry,
    results: impl Iterator<Item = (&'a str, &'a str, bool)>,
) {
    registry.inc(PASSES, "Unseal passes of the watcher.", &[]);
    for (pod, result, failed) in results {
        if result == "already unsealed" {
            continue;
        }
        registry.inc(
            ATTEMPTS,
            "Pods the watcher found sealed, uninitialized or unreachable, by result.",
            &[("pod", pod), ("result", result)],
        );
        if failed {
            registry.inc(
                FAILURES,
                "Pods the watcher could not unseal, by reason.",
                &[("pod", pod), ("reason", result)],
            );
        }
    }
}

/// Reads the pods and the store again and sets the gauges.
pub(crate) async fn record_state(
    registry: &Registry,
    cluster: &KubeCluster,
    store: &impl CredentialStore,
) {
    let credentials = store.load_credentials().await.ok().flatten();
    match &credentials {
        Some(c) => registry.set(
            GENERATION,
            "The key generation of the stored credentials.",
            &[],
            f64::from(c.generation),
        ),
        None => registry.clear(GENERATION),
    }
    let checkpoint = store.load_checkpoint().await.ok().flatten();
    registry.set(
        CHECKPOINT,
        "1 while an interrupted operation's checkpoint waits to be finished.",
        &[],
        flag(checkpoint.is_some()),
    );
    match checkpoint
        .as_ref()
        .and_then(|c| c.updated_at.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => registry.set(
            CHECKPOINT_UPDATED,
            "When the waiting checkpoint was last written (Unix time).",
            &[],
            t.as_second() as f64,
        ),
        None => registry.clear(CHECKPOINT_UPDATED),
    }
    let Ok(nodes) = cluster.nodes().await else {
        return;
    };
    let observed = observe(&nodes).await;
    for name in [POD_UP, POD_SEALED, POD_INITIALIZED, POD_LEADER, RAFT_VOTER] {
        registry.clear(name);
    }
    for o in &observed {
        let pod = [("pod", o.pod.as_str())];
        registry.set(
            POD_UP,
            "1 when the pod's server answered its seal status.",
            &pod,
            flag(o.seal.is_some()),
        );
        if let Some(s) = &o.seal {
            registry.set(
                POD_SEALED,
                "1 when the pod is sealed.",
                &pod,
                flag(s.sealed),
            );
            registry.set(
                POD_INITIALIZED,
                "1 when the pod is initialized.",
                &pod,
                flag(s.initialized),
            );
        }
        if let Some(l) = &o.leader {
            registry.set(
                POD_LEADER,
                "1 when the pod is the active node.",
                &pod,
                flag(l.is_self),
            );
        }
    }
    // Raft membership and failure tolerance need a token and the leader.
    let leader = observed
        .iter()
        .find(|o| o.leader.as_ref().is_some_and(|l| l.is_self))
        .and_then(|o| nodes.iter().find(|n| n.name() == o.pod));
    let (Some(leader), Some(credentials)) = (leader, credentials) else {
        registry.clear(FAILURE_TOLERANCE);
        return;
    };
    let token = &credentials.root_token;
    if let Ok(peers) = raft_peers(leader, token).await {
        for p in &peers {
            // Charts' node ids are the pod names, or generated: match both.
            let pod = nodes
                .iter()
                .find(|n| {
                    crate::ops::peers::peer_of(std::slice::from_ref(p), n.name(), n.hosts())
                        .is_some()
                })
                .map_or(p.node_id.as_str(), |n| n.name());
            registry.set(
                RAFT_VOTER,
                "1 when the pod is a raft voter.",
                &[("pod", pod)],
                flag(p.voter),
            );
        }
    }
    let state = leader
        .call(Request::read("sys/storage/raft/autopilot/state").with_token(token))
        .await;
    match state
        .ok()
        .and_then(|v| v.get("failure_tolerance").and_then(|f| f.as_f64()))
    {
        Some(f) => registry.set(
            FAILURE_TOLERANCE,
            "How many raft voters may fail with the cluster still keeping its quorum (autopilot).",
            &[],
            f,
        ),
        None => registry.clear(FAILURE_TOLERANCE),
    }
}
