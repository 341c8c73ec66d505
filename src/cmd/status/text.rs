//! The status as people read it (`-o table`): the pods table, the raft
//! peers, and a line per sealed, unreachable or self-unsealing pod and for
//! the stored credentials and the checkpoint.

use super::{ClusterStatus, Mode};
use crate::output::table;

pub(super) fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

pub(super) fn render(s: &ClusterStatus) -> String {
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
