//! The kubelet's side of one pod: starting its server process (config,
//! hosts file, spawn) and waiting until it listens, creating the pod
//! object, and killing, restarting and wiping it.
//!
//! When a pod is created is the StatefulSet's call ([`super::statefulset`]);
//! how a deleted pod goes is [`super::deletion`]'s.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{server_binary, Fleet, PodRuntime};
use crate::loopback::PodLoopback;
use crate::meta;
use crate::pod::{self, Health, PodView};
use crate::spawner::ServerProcess;

const START_DEADLINE: Duration = Duration::from_secs(30);

impl Fleet {
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
    pub(super) async fn create_pod(&self, ordinal: u32) -> anyhow::Result<()> {
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

    pub(super) fn kill(&self, ordinal: u32) -> Option<()> {
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

    pub(super) fn require(&self, ordinal: u32) -> anyhow::Result<()> {
        if !self.lock().pods.contains_key(&ordinal) {
            bail!("pod {} does not exist", self.opts.pod_name(ordinal));
        }
        Ok(())
    }

    pub(super) async fn restart_locked(&self, ordinal: u32) -> anyhow::Result<()> {
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
}
