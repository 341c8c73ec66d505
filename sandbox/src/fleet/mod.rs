//! The StatefulSet controller and kubelet of the sandbox: which pods exist,
//! their processes, restarts and cached health.
//!
//! Owns pod lifecycle (create, restart, wipe, remove, scale, and deletion
//! the way the charts' pods go: Terminating, Pending, Running), the
//! OrderedReady/Parallel rule, crash restarts, and the readiness probe
//! (every 5 s, as the charts probe; the fleet itself ticks every 200 ms).
//! Rendering pods as JSON is [`crate::render`]'s job; how a process is
//! launched is [`crate::pod`]'s and [`crate::spawner`]'s.
//!
//! Here: the fleet's state and what it tells about its pods. By noun:
//! `network` (IPs, hosts file), `container` (a pod's server process),
//! `deletion`, `statefulset` (replicas, policy, reconfigure), `probe`
//! (readiness, crash restarts) and `seal_provider` (transit).

mod container;
mod deletion;
mod network;
mod probe;
mod seal_provider;
mod statefulset;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::jiff::Timestamp;

use crate::loopback::PodLoopback;
use crate::meta::{self, Revisions};
use crate::options::ClusterOptions;
pub use crate::pod::PodView;
use crate::pod::{self, PodLayout};
use crate::spawner::{ServerProcess, Spawner};

struct PodRuntime {
    view: PodView,
    process: Option<ServerProcess>,
    generation: u64,
    last_crash_restart: Option<Instant>,
    /// Consecutive failed readiness probes of a Ready pod.
    misses: u32,
    /// When readiness was last probed (None: probe at the next tick).
    last_probe: Option<Instant>,
    /// Deleted: since when, and whether SIGTERM was sent.
    terminating: Option<(Instant, bool)>,
    /// Pending: when its container starts.
    start_at: Option<Instant>,
    /// The pod's own network namespace for exec (`loopback_addr`).
    loopback: Option<Arc<PodLoopback>>,
}

#[derive(Default)]
struct FleetState {
    desired: u32,
    removed: BTreeSet<u32>,
    pods: BTreeMap<u32, PodRuntime>,
    ips: BTreeMap<u32, Ipv4Addr>,
    /// Deleted pods the StatefulSet creates again, Pending first.
    recreating: BTreeSet<u32>,
    /// Ordinals whose next IP is a new one, not this old one.
    new_ip: BTreeMap<u32, Ipv4Addr>,
    closed: bool,
}

/// All pods of the StatefulSet and their processes.
pub struct Fleet {
    /// What the cluster was started with: its identity (names, flavour,
    /// policy). The server spec that a chart upgrade changes is `spec`.
    opts: ClusterOptions,
    /// The options as last reconfigured: storage, replicas, version, joins.
    spec: Mutex<ClusterOptions>,
    dir: PathBuf,
    spawner: Spawner,
    revisions: Arc<Revisions>,
    state: Mutex<FleetState>,
    lifecycle: tokio::sync::Mutex<()>,
    /// The transit seal's provider, once started (`Seal::Transit` only).
    transit: std::sync::OnceLock<crate::transit::TransitProvider>,
    /// StatefulSet uid.
    pub uid: String,
    /// StatefulSet creationTimestamp.
    pub created: Timestamp,
}

impl Fleet {
    /// A fleet with no pods yet; `reconcile` creates them.
    pub fn new(
        opts: ClusterOptions,
        dir: &Path,
        revisions: Arc<Revisions>,
    ) -> anyhow::Result<Self> {
        server_binary(&opts)?;
        let desired = opts.replicas;
        if opts.seal == crate::seal::Seal::Static {
            crate::seal::ensure_static_key(dir, &opts.name).context("write the static seal key")?;
        }
        Ok(Self {
            spec: Mutex::new(opts.clone()),
            opts,
            dir: dir.to_path_buf(),
            spawner: Spawner::new().context("start the spawner thread")?,
            revisions,
            state: Mutex::new(FleetState {
                desired,
                ..FleetState::default()
            }),
            lifecycle: tokio::sync::Mutex::new(()),
            transit: std::sync::OnceLock::new(),
            uid: meta::new_uid(),
            created: meta::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The options the fleet was built from: names, flavour, policy. For
    /// what a reconfigure changes (storage, version, replicas), see [`Self::spec`].
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// The options as last reconfigured.
    pub fn spec(&self) -> ClusterOptions {
        self.spec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The folder of pod `name`.
    pub fn layout(&self, name: &str) -> PodLayout {
        PodLayout::new(&self.dir, name)
    }

    /// Desired replicas (spec.replicas).
    pub fn desired(&self) -> u32 {
        self.lock().desired
    }

    /// Pods that currently exist, by ordinal.
    pub fn pods(&self) -> Vec<PodView> {
        self.lock().pods.values().map(|p| p.view.clone()).collect()
    }

    /// The network namespace exec'd commands of pod `name` join, if any.
    pub fn loopback(&self, name: &str) -> Option<Arc<PodLoopback>> {
        self.lock()
            .pods
            .values()
            .find(|p| p.view.name == name)
            .and_then(|p| p.loopback.clone())
    }

    /// One pod by name.
    pub fn pod(&self, name: &str) -> Option<PodView> {
        let o = self.opts.ordinal_of(name)?;
        self.lock().pods.get(&o).map(|p| p.view.clone())
    }

    /// Waits until at least `n` pods exist with their servers listening.
    pub async fn wait_for_pods(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let listening: Vec<Ipv4Addr> = self
                .pods()
                .iter()
                .filter(|p| p.running)
                .map(|p| p.ip)
                .collect();
            if listening.len() >= n {
                let mut ok = 0;
                for ip in &listening {
                    if pod::is_listening(*ip, pod::API_PORT).await {
                        ok += 1;
                    }
                }
                if ok >= n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {n} pods exist and listen after {timeout:?}",
                    listening.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills every server synchronously and stops creating pods.
    pub fn shutdown(&self) {
        let processes: Vec<ServerProcess> = {
            let mut st = self.lock();
            st.closed = true;
            st.pods
                .values_mut()
                .filter_map(|p| {
                    p.view.running = false;
                    p.process.take()
                })
                .collect()
        };
        for p in processes {
            p.kill();
        }
        if let Some(t) = self.transit.get() {
            t.down();
        }
        self.spawner.stop();
    }
}

/// The server binary `opts` asks for, checked to exist.
fn server_binary(opts: &ClusterOptions) -> anyhow::Result<PathBuf> {
    let bin = opts.server_binary();
    std::fs::canonicalize(&bin).with_context(|| {
        format!(
            "find the bao {} binary at {} (run scripts/install-deps)",
            opts.server_version(),
            bin.display()
        )
    })
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}
