//! `kubectl vault status`: every pod's state, the raft peer set and the
//! stored credentials' state, read concurrently and changed nowhere.
//!
//! Here the reading and the cluster's mode; by noun: `pods` (a pod's
//! line), `credentials` (the store's state) and `text` (the table).

use crate::cli::status::StatusArgs;
use crate::cmd::{Context, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::node::{raft_peers, RaftPeer, StorageKind, VaultNode};
use crate::ops::peers::peer_of;
use crate::ops::status::observe;
use crate::ops::store::CredentialStore;
use serde::Serialize;

mod credentials;
mod pods;
mod text;

use credentials::credentials_state;
pub use credentials::{CheckpointState, CredentialsState};
use pods::pod_status;
pub use pods::{seal_provider_failure, seal_provider_failures, PodStatus};
use text::{opt, render};

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub namespace: String,
    pub workload: String,
    pub cli: String,
    /// `raft` (HA) or `standalone` (not HA; file storage in the charts).
    pub mode: Option<Mode>,
    /// What the servers report in `storage_type` (`raft`, `file`, ...).
    pub storage: Option<String>,
    pub pods: Vec<PodStatus>,
    pub leader: Option<String>,
    pub peers: Option<Vec<PeerStatus>>,
    pub credentials: CredentialsState,
    /// The command to run next, and why; none when the cluster is whole.
    pub next: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Integrated storage: a leader, standbys and a raft peer set.
    Raft,
    /// One server, not HA (the charts' default `server.standalone`).
    Standalone,
}

/// One raft peer and the pod it belongs to (by node id or address).
#[derive(Debug, Serialize)]
pub struct PeerStatus {
    pub pod: Option<String>,
    #[serde(flatten)]
    pub peer: RaftPeer,
}

pub async fn run(ctx: &Context<'_>, args: StatusArgs) -> Result<(), Failure> {
    if args.watch {
        return watch(ctx, &args).await;
    }
    let status = gather(ctx, &args).await?;
    ctx.printer
        .value(&status, render)
        .map_err(Failure::failed)?;
    // Nothing here can bring a seal provider back: a person must.
    let failed: Vec<String> = status
        .pods
        .iter()
        .filter_map(|p| {
            p.seal_provider_failure
                .as_ref()
                .map(|f| format!("{} ({} seal)", p.name, f.seal))
        })
        .collect();
    if !failed.is_empty() {
        return Err(Failure::refused(anyhow::anyhow!(
            "{} cannot start: the seal provider is unreachable or refusing; bring it back and the pods unseal themselves (`kubectl vault unseal --watch` reports it)",
            failed.join(", ")
        )));
    }
    let refused: Vec<String> = status
        .pods
        .iter()
        .filter(|p| p.sealed_by_its_provider())
        .map(|p| format!("{} ({} seal)", p.name, opt(&p.seal)))
        .collect();
    if !refused.is_empty() {
        return Err(Failure::refused(anyhow::anyhow!(
            "{} sealed: the seal provider is unreachable or refusing; no unseal keys apply (check the provider and `kubectl logs POD`)",
            if refused.len() == 1 {
                format!("{} is", refused[0])
            } else {
                format!("{} are", refused.join(", "))
            }
        )));
    }
    Ok(())
}

/// Reads the status again every `--interval` and shows it when it changed:
/// in place on a terminal (table output), one after another otherwise.
/// Ends with Ctrl-C, leaving the last status on screen. A read that fails
/// is logged and retried.
async fn watch(ctx: &Context<'_>, args: &StatusArgs) -> Result<(), Failure> {
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut last = String::new();
    loop {
        let read = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            read = gather(ctx, args) => read,
        };
        match read {
            Ok(status) => {
                let text = serde_json::to_string(&status).map_err(Failure::failed)?;
                if text != last {
                    ctx.printer
                        .value_in_place(&status, render)
                        .map_err(Failure::failed)?;
                    last = text;
                }
            }
            Err(failure) => {
                ctx.printer.forget_in_place();
                tracing::warn!(error = %failure.error, "could not read the status; trying again");
            }
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(args.interval) => {}
        }
    }
}

/// One reading of every pod, the peers and the store.
async fn gather(ctx: &Context<'_>, args: &StatusArgs) -> Result<ClusterStatus, Failure> {
    let cluster = ctx.api_cluster().await?;
    let store = ctx.store(&cluster, args.secret_name.as_deref());
    let (nodes, infos, credentials, checkpoint) = tokio::join!(
        cluster.nodes(),
        cluster.pod_infos(),
        store.load_credentials(),
        store.load_checkpoint()
    );
    let nodes = nodes.map_err(Failure::refused)?;
    let infos = infos.map_err(Failure::refused)?;
    let observations = observe(&nodes).await;
    let provider_failures = seal_provider_failures(&cluster, &observations).await;
    let resume = checkpoint
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .map(|c| c.resume_command());
    let next = crate::cmd::next::next_step(
        &observations,
        crate::cmd::next::Stored {
            credentials: matches!(credentials, Ok(Some(_))),
            resume: resume.as_deref(),
        },
    );

    // A pod that does not answer may be an upgraded standalone server that
    // refuses its file storage: that hint beats any other.
    let mut next = next;
    for o in observations.iter().filter(|o| o.seal.is_none()) {
        if cluster.refuses_file_storage(&o.pod).await {
            next = Some(crate::cmd::next::pin_file_storage_image(&o.pod));
            break;
        }
    }

    let storage = observations
        .iter()
        .filter_map(|o| o.seal.as_ref())
        .map(|s| s.storage())
        .find(|k| *k != StorageKind::Unreported);
    let ha = observations
        .iter()
        .find_map(|o| o.leader.as_ref().map(|l| l.ha_enabled));
    let mode = mode_of(storage.as_ref(), ha);
    let standalone = mode == Some(Mode::Standalone);
    let leader_pod = observations
        .iter()
        .find(|o| o.leader.as_ref().is_some_and(|l| l.is_self))
        .map(|o| o.pod.clone());
    let token = match (&credentials, &checkpoint) {
        (Ok(Some(c)), _) => Some(c.root_token.clone()),
        (_, Ok(Some(cp))) => cp.credentials().map(|c| c.root_token.clone()),
        _ => None,
    };
    let peers = match (&leader_pod, &token) {
        (Some(leader), Some(token)) if !standalone => {
            match nodes.iter().find(|n| n.name() == leader) {
                Some(node) => raft_peers(node, token).await.ok(),
                None => None,
            }
        }
        _ => None,
    };
    let hosts_of = |pod: &str| {
        nodes
            .iter()
            .find(|n| n.name() == pod)
            .map_or(&[][..], |n| n.hosts())
    };
    let peers = peers.map(|peers| {
        peers
            .into_iter()
            .map(|peer| PeerStatus {
                pod: infos
                    .iter()
                    .map(|i| i.name.as_str())
                    .find(|pod| peer_of(std::slice::from_ref(&peer), pod, hosts_of(pod)).is_some())
                    .map(str::to_owned),
                peer,
            })
            .collect::<Vec<_>>()
    });
    let status = ClusterStatus {
        namespace: ctx.namespace.clone(),
        workload: cluster.workload_name(),
        cli: cluster.cli().binary().to_owned(),
        mode,
        storage: storage.map(|k| match k {
            StorageKind::Raft => "raft".to_owned(),
            StorageKind::Other(s) => s,
            StorageKind::Unreported => String::new(),
        }),
        pods: infos
            .iter()
            .map(|i| {
                let mut pod = pod_status(
                    i,
                    nodes
                        .iter()
                        .find(|n| n.name() == i.name)
                        .and_then(|n| n.used()),
                    observations.iter().find(|o| o.pod == i.name),
                    peers.as_deref(),
                    leader_pod.as_deref(),
                    standalone,
                );
                pod.seal_provider_failure = provider_failures
                    .iter()
                    .find(|(name, _)| *name == i.name)
                    .map(|(_, f)| f.clone());
                pod
            })
            .collect(),
        leader: leader_pod,
        peers,
        credentials: credentials_state(&store, credentials, checkpoint),
        next,
    };
    Ok(status)
}

/// Standalone when a server says it is not HA (`sys/leader`), or, while
/// none answers that (sealed), when its storage cannot be HA (`file`,
/// `inmem`). Raft when the storage is raft. Otherwise unknown (e.g. an HA
/// Consul backend: not raft, but not standalone either).
fn mode_of(storage: Option<&StorageKind>, ha_enabled: Option<bool>) -> Option<Mode> {
    match (ha_enabled, storage) {
        (Some(false), _) => Some(Mode::Standalone),
        (_, Some(StorageKind::Raft)) => Some(Mode::Raft),
        (None, Some(StorageKind::Other(kind))) if matches!(kind.as_str(), "file" | "inmem") => {
            Some(Mode::Standalone)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_comes_from_ha_enabled_then_from_the_storage() {
        let file = StorageKind::Other("file".into());
        let consul = StorageKind::Other("consul".into());
        assert_eq!(mode_of(Some(&file), Some(false)), Some(Mode::Standalone));
        // Sealed: no sys/leader answer, but file storage is never HA.
        assert_eq!(mode_of(Some(&file), None), Some(Mode::Standalone));
        assert_eq!(mode_of(Some(&StorageKind::Raft), None), Some(Mode::Raft));
        assert_eq!(
            mode_of(Some(&StorageKind::Raft), Some(true)),
            Some(Mode::Raft)
        );
        assert_eq!(mode_of(Some(&consul), Some(true)), None);
        assert_eq!(mode_of(Some(&consul), None), None);
        assert_eq!(mode_of(None, None), None);
    }
}
