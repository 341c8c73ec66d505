//! `kubectl vault status`: every pod's state, the raft peer set and the
//! stored credentials' state, read concurrently and changed nowhere.

use crate::cli::status::StatusArgs;
use crate::cmd::{Context, Failure};
use crate::ops::cluster::VaultCluster;
use crate::ops::node::{raft_peers, RaftPeer, StorageKind, VaultNode};
use crate::ops::peers::peer_of;
use crate::ops::status::{observe, NodeObservation};
use crate::ops::store::CredentialStore;
use crate::output::table;
use crate::transport::discover::PodInfo;
use serde::Serialize;

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
    fn sealed_by_its_provider(&self) -> bool {
        self.sealed == Some(true)
            && self.initialized == Some(true)
            && self.seal.as_deref().is_some_and(|k| k != "shamir")
    }
}

#[derive(Debug, Serialize)]
pub struct CredentialsState {
    pub object: String,
    pub present: bool,
    pub generation: Option<u32>,
    pub key_shares: Option<u8>,
    pub key_threshold: Option<u8>,
    /// The seal the stored document is for (`shamir`, `static`, ...).
    pub seal: Option<String>,
    /// How many recovery keys are stored (auto-unseal clusters; 0: none).
    pub recovery_keys: Option<usize>,
    pub error: Option<String>,
    pub checkpoint: Option<CheckpointState>,
}

#[derive(Debug, Serialize)]
pub struct CheckpointState {
    pub object: String,
    pub phase: Option<String>,
    pub holder: Option<String>,
    pub resume_command: Option<String>,
    pub error: Option<String>,
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

fn pod_status(
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

fn credentials_state(
    store: &impl CredentialStore,
    credentials: Result<
        Option<crate::ops::credentials::Credentials>,
        crate::ops::store::StoreError,
    >,
    checkpoint: Result<Option<crate::ops::checkpoint::Checkpoint>, crate::ops::store::StoreError>,
) -> CredentialsState {
    let checkpoint = match checkpoint {
        Ok(None) => None,
        Ok(Some(cp)) => Some(CheckpointState {
            object: store.checkpoint_object(),
            phase: serde_json::to_value(&cp.phase)
                .ok()
                .and_then(|v| v.get("phase").and_then(|p| p.as_str().map(str::to_owned))),
            holder: Some(cp.holder.clone()),
            resume_command: Some(cp.resume_command().to_owned()),
            error: None,
        }),
        Err(e) => Some(CheckpointState {
            object: store.checkpoint_object(),
            phase: None,
            holder: None,
            resume_command: None,
            error: Some(e.to_string()),
        }),
    };
    let (seal, recovery_keys) = match &credentials {
        Ok(Some(c)) => (
            Some(c.seal.name().to_owned()),
            c.seal.is_auto().then_some(c.recovery_keys_b64.len()),
        ),
        _ => (None, None),
    };
    let (present, generation, key_shares, key_threshold, error) = match credentials {
        Ok(Some(c)) => (
            true,
            Some(c.generation),
            Some(c.key_shares),
            Some(c.key_threshold),
            None,
        ),
        Ok(None) => (false, None, None, None, None),
        Err(e) => (false, None, None, None, Some(e.to_string())),
    };
    CredentialsState {
        object: store.credentials_object(),
        present,
        generation,
        key_shares,
        key_threshold,
        seal,
        recovery_keys,
        error,
        checkpoint,
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn render(s: &ClusterStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .pods
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.ready.to_string(),
                opt(&p.initialized),
                opt(&p.sealed),
                opt(&p.seal),
                opt(&p.unseal_progress),
                opt(&p.raft_role),
                opt(&p.voter),
                opt(&p.version),
                p.restarts.to_string(),
                p.transport.map_or("-", |t| t.name()).to_owned(),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "POD",
            "READY",
            "INITIALIZED",
            "SEALED",
            "SEAL",
            "PROGRESS",
            "ROLE",
            "VOTER",
            "VERSION",
            "RESTARTS",
            "TRANSPORT",
        ],
        &rows,
    );
    text.push('\n');
    text.push_str(&format!(
        "Workload:    {}/{} (CLI {})\n",
        s.namespace, s.workload, s.cli
    ));
    if s.mode == Some(Mode::Standalone) {
        let storage = s
            .storage
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or("not raft");
        text.push_str(&format!(
            "Mode:        standalone ({storage} storage, not HA): no raft peers or snapshots; `kubectl vault migrate` moves it to raft\n"
        ));
    } else {
        text.push_str(&format!(
            "Leader:      {}\n",
            s.leader.as_deref().unwrap_or("none")
        ));
    }
    if let Some(peers) = &s.peers {
        let list: Vec<String> = peers
            .iter()
            .map(|p| {
                let who = p
                    .pod
                    .clone()
                    .unwrap_or_else(|| format!("{} ({})", p.peer.node_id, p.peer.address));
                format!("{who}{}", if p.peer.voter { "" } else { " (non-voter)" })
            })
            .collect();
        text.push_str(&format!("Raft peers:  {}\n", list.join(", ")));
    }
    for p in s.pods.iter().filter(|p| p.error.is_some()) {
        match &p.seal_provider_failure {
            Some(f) => text.push_str(&format!(
                "Not running: {}: {f}; no unseal keys apply: bring the provider back\n",
                p.name
            )),
            None => text.push_str(&format!("Unreachable: {}: {}\n", p.name, opt(&p.error))),
        }
    }
    for p in s.pods.iter().filter(|p| p.sealed_by_its_provider()) {
        text.push_str(&format!(
            "Sealed:      {}: it unseals itself through its {} seal, so the seal provider is unreachable or refusing; no unseal keys apply (check the provider and `kubectl logs {}`)\n",
            p.name,
            opt(&p.seal),
            p.name
        ));
    }
    let c = &s.credentials;
    match (c.present, &c.error) {
        (_, Some(e)) => text.push_str(&format!("Credentials: {e}\n")),
        (true, None) => match c.recovery_keys {
            None => text.push_str(&format!(
                "Credentials: {} (generation {}, threshold {} of {})\n",
                c.object,
                opt(&c.generation),
                opt(&c.key_threshold),
                opt(&c.key_shares)
            )),
            Some(0) => text.push_str(&format!(
                "Credentials: {} (generation {}, {} seal, no recovery keys stored: the cluster has none; `kubectl vault rotate --recovery` creates them)\n",
                c.object,
                opt(&c.generation),
                opt(&c.seal)
            )),
            Some(_) => text.push_str(&format!(
                "Credentials: {} (generation {}, {} seal, recovery keys stored: threshold {} of {})\n",
                c.object,
                opt(&c.generation),
                opt(&c.seal),
                opt(&c.key_threshold),
                opt(&c.key_shares)
            )),
        },
        (false, None) => text.push_str(&format!("Credentials: none in {}\n", c.object)),
    }
    if let Some(cp) = &c.checkpoint {
        match &cp.error {
            Some(e) => text.push_str(&format!("Checkpoint:  {e}\n")),
            None => text.push_str(&format!(
                "Checkpoint:  {} holds an interrupted {} (by {}); resume with `{}`\n",
                cp.object,
                opt(&cp.phase),
                opt(&cp.holder),
                opt(&cp.resume_command)
            )),
        }
    }
    if let Some(next) = &s.next {
        text.push_str(&format!("Next:        {next}\n"));
    }
    text
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
