//! The pods' addresses: the loopback IP each ordinal has (the one of an
//! earlier run of the same folder while it is free, a new one for a pod
//! recreated after a deletion when raft addresses are DNS names), and the
//! hosts file that resolves the pods' DNS names with `cluster_dns`.
//!
//! Which IPs are free is [`crate::pod::allocate_ip`]'s call.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context;

use super::Fleet;
use crate::pod;

impl Fleet {
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
    pub(super) fn hosts_file(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    /// Writes the hosts file for every ordinal up to `ordinal` and the
    /// desired replicas (allocating their IPs), in place: the servers see it
    /// through a bind mount of this very inode.
    pub(super) fn write_hosts(&self, ordinal: u32) -> anyhow::Result<()> {
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
}
