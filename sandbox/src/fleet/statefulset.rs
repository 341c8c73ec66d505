//! The StatefulSet controller: spec.replicas, removed pods, `helm upgrade`
//! (reconfigure), and the pod management policy (OrderedReady or Parallel)
//! that decides which pods are created now, a deleted pod's Pending
//! successor among them.
//!
//! Starting a pod's process is [`super::container`]'s job.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{server_binary, Fleet, FleetState, PodRuntime};
use crate::meta;
use crate::options::{PodManagement, Reconfigure};
use crate::pod::{Health, PodView};

/// How long a recreated pod stays Pending (ContainerCreating).
const CONTAINER_CREATING: Duration = Duration::from_secs(1);

impl Fleet {
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
}
