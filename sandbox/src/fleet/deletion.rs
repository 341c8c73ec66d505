//! Deleting a pod the way the charts' pods go: Terminating while the
//! preStop hook sleeps, then SIGTERM, gone once its server exited or the
//! grace period is over. The StatefulSet then recreates it
//! ([`super::statefulset`]).

use std::time::{Duration, Instant};

use anyhow::bail;

use super::Fleet;
use crate::meta;
use crate::pod::PodView;

/// The charts' shutdown: a preStop hook `sleep 5 && kill -SIGTERM`, and
/// SIGKILL at terminationGracePeriodSeconds (10).
const PRE_STOP: Duration = Duration::from_secs(5);
const GRACE: Duration = Duration::from_secs(10);

impl Fleet {
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
    pub(super) fn advance_deletions(&self) {
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
}
