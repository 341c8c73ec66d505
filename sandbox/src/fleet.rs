//! The StatefulSet controller and kubelet of the sandbox: which pods exist,
//! their processes, restarts and cached health.
//!
//! Owns pod lifecycle (create, restart, wipe, remove, scale, and deletion
//! the way the charts' pods go: Terminating, Pending, Running), the
//! OrderedReady/Parallel rule, crash restarts, and the readiness probe
//! (every 5 s, as the charts probe; the fleet itself ticks every 200 ms).
//! Rendering pods as JSON is [`crate::render`]'s job; how a process is
//! launched is [`crate::pod`]'s and [`crate::spawner`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::jiff::Timestamp;

use crate::loopback::PodLoopback;
use crate::meta::{self, Revisions};
use crate::options::{ClusterOptions, PodManagement, Reconfigure};
pub use crate::pod::PodView;
use crate::pod::{self, Health, PodLayout};
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

/// The charts' readiness probe: `vault status` every 5 s; a Ready pod turns
/// NotReady after two failures in a row, a NotReady one Ready at the first
/// success.
const PROBE_PERIOD: Duration = Duration::from_secs(5);
const PROBE_FAILURE_THRESHOLD: u32 = 2;
/// The charts' shutdown: a preStop hook `sleep 5 && kill -SIGTERM`, and
/// SIGKILL at terminationGracePeriodSeconds (10).
const PRE_STOP: Duration = Duration::from_secs(5);
const GRACE: Duration = Duration::from_secs(10);
/// How long a recreated pod stays Pending (ContainerCreating).
const CONTAINER_CREATING: Duration = Duration::from_secs(1);
const START_DEADLINE: Duration = Duration::from_secs(30);

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

    /// The IP an ordinal has (or will have), allocating it on first use.
    pub fn ip_of(&self, ordinal: u32) -> anyhow::Result<Ipv4Addr> {
        let mut st = self.lock();
        if let Some(ip) = st.ips.get(&ordinal) {
            return Ok(*ip);
        }
        let layout = self.layout(&self.opts.pod_name(ordinal));
        let taken: Vec<Ipv4Addr> = st.ips.values().copied().collect();
        let ip = match st.new_ip.remove(&ordinal) {
            Some(old) => loop {
                let ip = pod::allocate_ip(None)?;
                if ip != old && !taken.contains(&ip) {
                    break ip;
                }
            },
            None => {
                let preferred = layout.previous_ip().filter(|ip| !taken.contains(ip));
                pod::allocate_ip(preferred)?
            }
        };
        st.ips.insert(ordinal, ip);
        Ok(ip)
    }

    /// `<dir>/hosts`: what each pod's `/etc/hosts` says with `cluster_dns`.
    fn hosts_file(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    /// Writes the hosts file for every ordinal up to `ordinal` and the
    /// desired replicas (allocating their IPs), in place: the servers see it
    /// through a bind mount of this very inode.
    fn write_hosts(&self, ordinal: u32) -> anyhow::Result<()> {
        let last = ordinal.max(self.desired().saturating_sub(1));
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for o in 0..=last {
            let pod = self.opts.pod_name(o);
            let dns = self.opts.pod_dns_name(&pod);
            let ns = &self.opts.namespace;
            text.push_str(&format!(
                "{}\t{dns} {dns}.{ns} {dns}.{ns}.svc {dns}.{ns}.svc.cluster.local {pod}\n",
                self.ip_of(o)?
            ));
        }
        let path = self.hosts_file();
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }

    fn start_process(&self, ordinal: u32) -> anyhow::Result<(ServerProcess, Ipv4Addr)> {
        let name = self.opts.pod_name(ordinal);
        let ip = self.ip_of(ordinal)?;
        let leader = self.ip_of(0)?;
        let layout = self.layout(&name);
        let spec = self.spec();
        let bao = server_binary(&spec)?;
        layout
            .prepare(&spec, &name, ip, leader, &bao)
            .with_context(|| format!("prepare {}", layout.dir.display()))?;
        let hosts = if self.opts.cluster_dns {
            self.write_hosts(ordinal)?;
            Some(self.hosts_file())
        } else {
            None
        };
        let cmd = layout.server_command(&bao, hosts.as_deref(), &spec)?;
        let process = self
            .spawner
            .spawn(cmd)
            .with_context(|| format!("start bao server for {name}"))?;
        Ok((process, ip))
    }

    async fn wait_listening(&self, ordinal: u32, ip: Ipv4Addr) -> anyhow::Result<()> {
        let name = self.opts.pod_name(ordinal);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if pod::is_listening(ip, pod::API_PORT).await {
                return Ok(());
            }
            let exited = {
                let mut st = self.lock();
                match st.pods.get_mut(&ordinal).and_then(|p| p.process.as_mut()) {
                    Some(p) => p.has_exited(),
                    None => bail!("pod {name} went away while starting"),
                }
            };
            if exited {
                bail!(
                    "bao server of {name} exited at start:\n{}",
                    self.layout(&name).log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "bao server of {name} is not listening on {ip}:8200 after {START_DEADLINE:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates pod `ordinal` (new object) and waits until its server listens.
    async fn create_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        if self.lock().closed {
            bail!("the cluster is shutting down");
        }
        self.layout(&self.opts.pod_name(ordinal))
            .reset_pod_files()
            .context("reset the new pod's emptyDir and /tmp")?;
        let (process, ip) = self.start_process(ordinal)?;
        let loopback = if self.opts.loopback_addr {
            // The transit provider, reachable from the pod as another
            // cluster's Service would be.
            let services: Vec<std::net::SocketAddrV4> = self
                .transit
                .get()
                .and_then(|p| p.address().trim_start_matches("http://").parse().ok())
                .into_iter()
                .collect();
            match PodLoopback::start(ip, pod::API_PORT, &services) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    process.kill();
                    bail!("the network namespace of pod {ordinal}: {e}");
                }
            }
        } else {
            None
        };
        let now = meta::now();
        // A Pending pod keeps its identity when its container starts.
        let (uid, created) = self
            .lock()
            .pods
            .get(&ordinal)
            .filter(|p| p.view.pending)
            .map_or_else(
                || (meta::new_uid(), now),
                |p| (p.view.uid.clone(), p.view.created),
            );
        let view = PodView {
            ordinal,
            name: self.opts.pod_name(ordinal),
            uid,
            ip,
            created,
            started_at: now,
            restart_count: 0,
            health: Health::Unknown,
            running: true,
            resource_version: self.revisions.next(),
            pid: Some(process.pid()),
            pending: false,
            deleting: None,
        };
        let old = self.lock().pods.insert(
            ordinal,
            PodRuntime {
                view,
                process: Some(process),
                generation: 0,
                last_crash_restart: None,
                misses: 0,
                last_probe: None,
                terminating: None,
                start_at: None,
                loopback,
            },
        );
        if let Some(p) = old.and_then(|p| p.process) {
            p.kill();
        }
        self.wait_listening(ordinal, ip).await
    }

    fn kill(&self, ordinal: u32) -> Option<()> {
        let process = {
            let mut st = self.lock();
            let p = st.pods.get_mut(&ordinal)?;
            p.view.running = false;
            p.view.pid = None;
            p.view.health = Health::Unknown;
            p.misses = 0;
            p.last_probe = None;
            p.generation += 1;
            p.process.take()
        };
        if let Some(p) = process {
            p.kill();
        }
        Some(())
    }

    fn require(&self, ordinal: u32) -> anyhow::Result<()> {
        if !self.lock().pods.contains_key(&ordinal) {
            bail!("pod {} does not exist", self.opts.pod_name(ordinal));
        }
        Ok(())
    }

    async fn restart_locked(&self, ordinal: u32) -> anyhow::Result<()> {
        self.require(ordinal)?;
        self.kill(ordinal);
        self.layout(&self.opts.pod_name(ordinal))
            .reset_container_files()
            .context("reset the restarted container's /tmp")?;
        let (process, ip) = self.start_process(ordinal)?;
        {
            let mut st = self.lock();
            let Some(p) = st.pods.get_mut(&ordinal) else {
                process.kill();
                bail!(
                    "pod {} went away while restarting",
                    self.opts.pod_name(ordinal)
                );
            };
            p.view.restart_count += 1;
            p.view.started_at = meta::now();
            p.view.running = true;
            p.view.pid = Some(process.pid());
            p.view.resource_version = self.revisions.next();
            p.generation += 1;
            p.process = Some(process);
        }
        self.wait_listening(ordinal, ip).await
    }

    /// SIGKILLs the server and starts it again: it comes back sealed, restartCount+1.
    pub async fn restart_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        let _guard = self.lifecycle.lock().await;
        self.restart_locked(ordinal).await
    }

    /// Restarts every existing pod.
    pub async fn restart_all(&self) -> anyhow::Result<()> {
        let _guard = self.lifecycle.lock().await;
        let ordinals: Vec<u32> = self.lock().pods.keys().copied().collect();
        for o in ordinals {
            self.restart_locked(o).await?;
        }
        Ok(())
    }

    /// Kills the pod, deletes its data (PVC lost) and creates it again, uninitialized.
    pub async fn wipe_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        let _guard = self.lifecycle.lock().await;
        self.require(ordinal)?;
        self.kill(ordinal);
        self.layout(&self.opts.pod_name(ordinal)).wipe_data()?;
        self.create_pod(ordinal).await
    }

    /// Deletes the pod as `kubectl delete pod` does on the charts' pods. It
    /// stays Terminating (phase Running, a deletionTimestamp) while the
    /// preStop hook sleeps, then gets SIGTERM, and is gone once its server
    /// exited (SIGKILL at the grace period). The StatefulSet then creates it
    /// again with its data: Pending for a moment, then Running, with a new
    /// IP when raft addresses are DNS names (with IPs, a new one would
    /// strand the raft member, which the charts avoid by using names).
    /// Returns the pod as the DELETE answers it; [`Fleet::tick`] does the rest.
    pub fn delete_pod(&self, ordinal: u32) -> anyhow::Result<PodView> {
        let mut st = self.lock();
        let Some(p) = st.pods.get_mut(&ordinal) else {
            bail!("pod {} does not exist", self.opts.pod_name(ordinal));
        };
        if p.view.deleting.is_none() {
            p.view.deleting = Some(meta::now());
            p.terminating = Some((Instant::now(), false));
            p.view.resource_version = self.revisions.next();
        }
        Ok(p.view.clone())
    }

    /// Moves deleted pods along: SIGTERM after the preStop hook, gone once
    /// the server exited or the grace period is over.
    fn advance_deletions(&self) {
        let mut gone = Vec::new();
        {
            let mut st = self.lock();
            let mut done = Vec::new();
            for p in st.pods.values_mut() {
                let Some((since, sigterm)) = p.terminating.as_mut() else {
                    continue;
                };
                if !*sigterm && since.elapsed() >= PRE_STOP {
                    if let Some(process) = &p.process {
                        process.terminate();
                    }
                    *sigterm = true;
                }
                let exited = p.process.as_mut().is_none_or(|proc| proc.has_exited());
                if exited || since.elapsed() >= GRACE {
                    done.push(p.view.ordinal);
                }
            }
            for o in done {
                if let Some(p) = st.pods.remove(&o) {
                    gone.extend(p.process);
                    st.recreating.insert(o);
                    if self.opts.cluster_dns {
                        st.ips.remove(&o);
                        st.new_ip.insert(o, p.view.ip);
                    }
                }
            }
        }
        for process in gone {
            process.kill();
        }
    }

    /// The pod disappears until `scale` or `restore_pod`; its data stays.
    pub async fn remove_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        let _guard = self.lifecycle.lock().await;
        self.require(ordinal)?;
        self.kill(ordinal);
        let mut st = self.lock();
        st.pods.remove(&ordinal);
        st.removed.insert(ordinal);
        Ok(())
    }

    /// Lets a removed pod come back (subject to the pod management policy).
    pub async fn restore_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        self.lock().removed.remove(&ordinal);
        self.reconcile().await
    }

    /// Sets spec.replicas: removes the highest ordinals (data kept) or creates missing pods.
    pub async fn scale(&self, replicas: u32) -> anyhow::Result<()> {
        {
            let _guard = self.lifecycle.lock().await;
            let doomed: Vec<u32> = {
                let mut st = self.lock();
                st.desired = replicas;
                st.removed.clear();
                st.pods.keys().copied().filter(|o| *o >= replicas).collect()
            };
            for o in doomed.into_iter().rev() {
                self.kill(o);
                self.lock().pods.remove(&o);
            }
        }
        self.reconcile().await
    }

    /// What `helm upgrade` with new values does, with the charts'
    /// `updateStrategy: OnDelete` followed by deleting every pod: the
    /// StatefulSet spec changes, every existing pod is recreated with the new
    /// config and image (highest ordinal first, as a rolling update goes;
    /// PVC folders kept), pods above the new replica count go away, and the
    /// missing ones are created in the policy's order (OrderedReady: the
    /// next one once the previous is Ready, so once it is unsealed).
    ///
    /// A server that cannot start on the new spec (OpenBao 2.7 on file
    /// storage) is left crash-looping, as the kubelet would.
    pub async fn reconfigure(&self, change: &Reconfigure) -> anyhow::Result<()> {
        let spec = change.apply(self.spec());
        server_binary(&spec)?;
        {
            let _guard = self.lifecycle.lock().await;
            let existing: Vec<u32> = {
                let mut st = self.lock();
                st.desired = spec.replicas;
                st.removed.clear();
                st.pods.keys().copied().collect()
            };
            *self.spec.lock().unwrap_or_else(|p| p.into_inner()) = spec.clone();
            if self.opts.cluster_dns {
                self.write_hosts(0)?;
            }
            for o in existing.into_iter().rev() {
                self.kill(o);
                self.lock().pods.remove(&o);
                if o >= spec.replicas {
                    continue;
                }
                if let Err(e) = self.create_pod(o).await {
                    tracing::warn!("pod {o} does not start on the new spec: {e:#}");
                }
            }
        }
        self.reconcile().await
    }

    /// Creates the pods the policy allows now. OrderedReady: the lowest missing
    /// ordinal, once every lower pod is Ready. Parallel: every missing ordinal.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        let _guard = self.lifecycle.lock().await;
        let to_create: Vec<u32> = {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            let mut out = Vec::new();
            for o in 0..st.desired {
                match (st.pods.get(&o), st.removed.contains(&o)) {
                    (Some(p), _) if p.view.pending => {
                        if p.start_at.is_some_and(|t| Instant::now() >= t) {
                            out.push(o);
                        }
                        if self.opts.pod_management == PodManagement::OrderedReady {
                            break;
                        }
                    }
                    (Some(p), _) => {
                        if self.opts.pod_management == PodManagement::OrderedReady
                            && !p.view.health.is_ready()
                        {
                            break;
                        }
                    }
                    (None, true) => {
                        if self.opts.pod_management == PodManagement::OrderedReady {
                            break;
                        }
                    }
                    (None, false) if st.recreating.contains(&o) => {
                        self.insert_pending(&mut st, o);
                        if self.opts.pod_management == PodManagement::OrderedReady {
                            break;
                        }
                    }
                    (None, false) => {
                        out.push(o);
                        if self.opts.pod_management == PodManagement::OrderedReady {
                            break;
                        }
                    }
                }
            }
            out
        };
        if !to_create.is_empty() {
            self.ensure_transit().await?;
        }
        for o in to_create {
            self.create_pod(o).await?;
        }
        Ok(())
    }

    /// Starts the transit provider before the first pod that needs it.
    /// Called with the lifecycle lock held, so it starts once.
    async fn ensure_transit(&self) -> anyhow::Result<()> {
        if self.opts.seal != crate::seal::Seal::Transit || self.transit.get().is_some() {
            return Ok(());
        }
        let provider = crate::transit::TransitProvider::start(
            &self.dir,
            &crate::seal::secret_dir(&self.dir, &self.opts.name),
            &server_binary(&self.spec())?,
            &self.spawner,
        )
        .await
        .context("start the transit seal provider")?;
        let _ = self.transit.set(provider);
        Ok(())
    }

    /// Stops (`up = false`) or starts the transit seal provider; pods that
    /// restart meanwhile stay sealed until it is back.
    pub async fn seal_provider(&self, up: bool) -> anyhow::Result<()> {
        let provider = self
            .transit
            .get()
            .context("this cluster has no transit seal provider (up --seal transit)")?;
        if up {
            provider.up(&self.spawner).await
        } else {
            provider.down();
            Ok(())
        }
    }

    /// The transit provider's address, if this cluster has one.
    pub fn seal_provider_address(&self) -> Option<String> {
        self.transit.get().map(|p| p.address())
    }

    /// A deleted pod's successor: scheduled, its container not started yet.
    fn insert_pending(&self, st: &mut FleetState, ordinal: u32) {
        st.recreating.remove(&ordinal);
        let now = meta::now();
        let view = PodView {
            ordinal,
            name: self.opts.pod_name(ordinal),
            uid: meta::new_uid(),
            ip: Ipv4Addr::UNSPECIFIED,
            created: now,
            started_at: now,
            restart_count: 0,
            health: Health::Unknown,
            running: false,
            resource_version: self.revisions.next(),
            pid: None,
            pending: true,
            deleting: None,
        };
        st.pods.insert(
            ordinal,
            PodRuntime {
                view,
                process: None,
                generation: 0,
                last_crash_restart: None,
                misses: 0,
                last_probe: None,
                terminating: None,
                start_at: Some(Instant::now() + CONTAINER_CREATING),
                loopback: None,
            },
        );
    }

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
