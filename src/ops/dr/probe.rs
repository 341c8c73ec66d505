//! Probing one cluster for the figures it is scored on.
//!
//! Owns which requests a probe sends and how their answers become
//! [`Figures`]: seal status of every pod, the health code the first
//! answering server stands for, N timed seal-status requests for latency,
//! and, where a server is unsealed and a token is given, the leader and
//! autopilot's voters and failure tolerance. Lag is the caller's to add (it
//! comes from the DR state and the snapshot manifests, not the cluster).

use crate::ops::cluster::VaultCluster;
use crate::ops::dr::score::Figures;
use crate::ops::node::{leader, seal_status, Request, SealStatus, VaultNode};
use crate::ops::secret::Secret;
use std::time::{Duration, Instant};

/// The `sys/health` code a server with this seal status and leadership answers.
pub fn health_code(status: &SealStatus, is_active: bool) -> u16 {
    if !status.initialized {
        501
    } else if status.sealed {
        503
    } else if is_active {
        200
    } else {
        429
    }
}

/// The `q`-quantile (0..=1) of `samples` by nearest rank; `None` when empty.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Probes `cluster`: `probes` timed requests to the first answering pod,
/// each bounded by `timeout`. Never fails: what does not answer is counted
/// as such.
pub async fn probe<C: VaultCluster>(
    cluster: &C,
    token: Option<&Secret>,
    probes: u32,
    timeout: Duration,
) -> Figures {
    let mut f = Figures {
        replicas: u32::try_from(cluster.replicas()).unwrap_or(u32::MAX),
        ..Figures::default()
    };
    let Ok(Ok(nodes)) = tokio::time::timeout(timeout, cluster.nodes()).await else {
        return f;
    };
    let statuses = futures::future::join_all(
        nodes
            .iter()
            .map(|n| tokio::time::timeout(timeout, seal_status(n))),
    )
    .await;
    let mut first: Option<(&C::Node, SealStatus)> = None;
    let mut active: Option<&C::Node> = None;
    for (node, status) in nodes.iter().zip(statuses) {
        let Ok(Ok(status)) = status else { continue };
        f.answering += 1;
        f.initialized += u32::from(status.initialized);
        f.sealed += u32::from(status.sealed);
        if !status.sealed && active.is_none() {
            if let Ok(Ok(l)) = tokio::time::timeout(timeout, leader(node)).await {
                if l.is_self || !l.ha_enabled {
                    active = Some(node);
                }
            }
        }
        if first.is_none() {
            first = Some((node, status));
        }
    }
    f.reachable = f.answering > 0;
    let Some((node, status)) = first else {
        return f;
    };
    let (probed, code) = match active {
        Some(a) => (a, 200),
        None => (node, health_code(&status, false)),
    };
    f.health = Some(code);
    f.leader = active.map(|a| a.name().to_owned());
    let mut samples = Vec::new();
    for _ in 0..probes {
        let started = Instant::now();
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, seal_status(probed)).await {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    f.latency_p50_ms = quantile(&samples, 0.5);
    f.latency_p95_ms = quantile(&samples, 0.95);
    if let (Some(a), Some(token)) = (active, token) {
        let state = tokio::time::timeout(
            timeout,
            a.call(Request::read("sys/storage/raft/autopilot/state").with_token(token)),
        )
        .await;
        if let Ok(Ok(v)) = state {
            f.failure_tolerance = v
                .get("failure_tolerance")
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            f.voters = v
                .get("voters")
                .and_then(serde_json::Value::as_array)
                .and_then(|a| u32::try_from(a.len()).ok());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let s = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&s, 0.5), Some(3.0));
        assert_eq!(quantile(&s, 0.95), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7.0], 0.95), Some(7.0));
    }

    #[test]
    fn health_codes_follow_sys_health() {
        let mut s = SealStatus::default();
        assert_eq!(health_code(&s, false), 501);
        s.initialized = true;
        s.sealed = true;
        assert_eq!(health_code(&s, false), 503);
        s.sealed = false;
        assert_eq!(health_code(&s, true), 200);
        assert_eq!(health_code(&s, false), 429);
    }
}
