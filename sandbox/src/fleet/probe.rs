//! The fleet's tick: the charts' readiness probe (every 5 s; a Ready pod
//! turns NotReady after two failures in a row), restarts of crashed
//! servers, then a reconcile.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::Fleet;
use crate::pod::Health;

/// The charts' readiness probe: `vault status` every 5 s; a Ready pod turns
/// NotReady after two failures in a row, a NotReady one Ready at the first
/// success.
const PROBE_PERIOD: Duration = Duration::from_secs(5);
const PROBE_FAILURE_THRESHOLD: u32 = 2;

impl Fleet {
    /// Probes every pod's health once, moves deletions along, restarts
    /// crashed servers, then reconciles.
    pub async fn tick(&self) {
        self.advance_deletions();
        let targets: Vec<(u32, Ipv4Addr, u64)> = {
            let mut st = self.lock();
            st.pods
                .values_mut()
                .filter(|p| p.view.running)
                .filter(|p| p.last_probe.is_none_or(|t| t.elapsed() >= PROBE_PERIOD))
                .map(|p| {
                    p.last_probe = Some(Instant::now());
                    (p.view.ordinal, p.view.ip, p.generation)
                })
                .collect()
        };
        let tls = self.opts.tls_listener;
        let client_auth = self.opts.listener_client_auth;
        let probes = targets
            .iter()
            .map(|(o, ip, g)| async move { (*o, *g, Health::probe(*ip, tls, client_auth).await) });
        let results = futures::future::join_all(probes).await;
        let mut crashed = Vec::new();
        {
            let mut st = self.lock();
            for (o, g, h) in results {
                if let Some(p) = st.pods.get_mut(&o).filter(|p| p.generation == g) {
                    // failureThreshold: a Ready pod stays Ready through one
                    // failed probe; anything else takes effect at once.
                    if p.view.health.is_ready() && !h.is_ready() {
                        p.misses += 1;
                        if p.misses < PROBE_FAILURE_THRESHOLD {
                            continue;
                        }
                    } else {
                        p.misses = 0;
                    }
                    if p.view.health != h {
                        p.view.health = h;
                        p.view.resource_version = self.revisions.next();
                    }
                }
            }
            for p in st.pods.values_mut() {
                let dead = p.terminating.is_none()
                    && p.process.as_mut().is_some_and(|proc| proc.has_exited());
                let recent = p
                    .last_crash_restart
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
                if dead && !recent {
                    p.last_crash_restart = Some(Instant::now());
                    crashed.push(p.view.ordinal);
                }
            }
        }
        for o in crashed {
            if let Ok(_guard) = self.lifecycle.try_lock() {
                if let Err(e) = self.restart_locked(o).await {
                    tracing::warn!("restart of crashed pod {o} failed: {e:#}");
                }
            }
        }
        if let Err(e) = self.reconcile().await {
            tracing::warn!("reconcile failed: {e:#}");
        }
    }
}
