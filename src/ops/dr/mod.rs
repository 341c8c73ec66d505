//! Disaster recovery across clusters: one primary and warm standbys that
//! share a snapshot location.
//!
//! Owns the DR group's description ([`config`]), the shared DR state and its
//! conditional writes ([`state`]), the choice of the best standby
//! ([`score`]), the figures a cluster is scored on ([`probe`]) and sealing a
//! whole cluster ([`fence`]). Restoring data into a standby is
//! [`crate::ops::restore`]'s job; nothing here restores. Kubernetes (which
//! context reaches which cluster) is the command layer's business.

pub mod config;
pub mod fence;
#[cfg(test)]
pub(crate) mod memory;
pub mod probe;
pub mod score;
pub mod state;

/// True when `holder` (`kubectl-vault@host/pid`, as written by the command
/// layer) names a process on this host that no longer runs. A holder on
/// another host, or one that does not parse, is never called gone.
pub fn holder_gone(holder: &str) -> bool {
    let Some((host, pid)) = holder
        .strip_prefix("kubectl-vault@")
        .and_then(|h| h.rsplit_once('/'))
    else {
        return false;
    };
    let here = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == here && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
