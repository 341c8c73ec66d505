//! A pod's `bao server`: its config file (storage, seal, listener, raft
//! join), the CLI its main container has in PATH (for the Vault flavour, a
//! shim that maps `VAULT_*` to `BAO_*`), the names its listener certificate
//! is valid for, and the command that starts it.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::layout::START_MARKER;
use super::{running_as_root, PodLayout, API_PORT, CLUSTER_PORT, CONTAINER_GID, CONTAINER_UID};
use crate::options::{ClusterOptions, Flavour, Storage};

/// Where a pod with a blocked cluster port listens for raft instead.
const BLOCKED_CLUSTER_PORT: u16 = 18201;

impl PodLayout {
    /// Creates folders, writes the config and the CLI for the main container.
    pub fn prepare(
        &self,
        opts: &ClusterOptions,
        name: &str,
        ip: Ipv4Addr,
        leader_ip: Ipv4Addr,
        bao: &Path,
    ) -> io::Result<()> {
        std::fs::create_dir_all(self.data())?;
        std::fs::create_dir_all(self.bin())?;
        std::fs::create_dir_all(self.home())?;
        std::fs::create_dir_all(self.tmp())?;
        self.grant_volumes()?;
        std::fs::write(self.ip_file(), ip.to_string())?;
        if opts.tls_listener {
            crate::listener_tls::issue(
                &self.cluster_dir(),
                &opts.name,
                &self.dir,
                listener_names(opts, name),
                ip,
            )
            .map_err(io::Error::other)?;
            if opts.listener_client_auth {
                crate::listener_tls::issue_client(&self.cluster_dir(), &opts.name)
                    .map_err(io::Error::other)?;
            }
        }
        std::fs::write(
            self.config(),
            server_config(self, opts, name, ip, opts.retry_join.then_some(leader_ip)),
        )?;
        if opts.seal_in == crate::SealIn::JsonConfig && opts.seal == crate::seal::Seal::Static {
            std::fs::write(
                self.seal_json(),
                crate::seal::json_config(&crate::seal::secret_dir(&self.cluster_dir(), &opts.name)),
            )?;
        } else {
            let _ = std::fs::remove_file(self.seal_json());
        }
        let cli = self.bin().join(opts.flavour.cli());
        let _ = std::fs::remove_file(&cli);
        match opts.flavour {
            Flavour::OpenBao => std::os::unix::fs::symlink(bao, &cli)?,
            Flavour::Vault => {
                std::fs::write(&cli, vault_shim(bao))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(())
    }

    /// `bao server -config config.hcl` (and `-config seal.json` when
    /// [`Self::prepare`] wrote one), output to `server.log`, clean
    /// environment but for a seal configured there ([`crate::seal::env`]).
    /// With `hosts`, the server runs in its own mount namespace where that
    /// file is `/etc/hosts` (`unshare -m` execs in place, so the pid and
    /// process group stay the server's).
    pub fn server_command(
        &self,
        bao: &Path,
        hosts: Option<&Path>,
        opts: &ClusterOptions,
    ) -> io::Result<Command> {
        let env = crate::seal::env(opts, &self.cluster_dir())?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        {
            use std::io::Write;
            writeln!(log, "{START_MARKER}")?;
        }
        // The server runs as the charts' container user, as exec'd commands
        // do: what it writes on the PVC is theirs to read (a backup, a copy).
        let as_root = running_as_root();
        let mut cmd = match hosts {
            None => {
                let mut c = Command::new(bao);
                if as_root {
                    use std::os::unix::process::CommandExt;
                    c.uid(CONTAINER_UID).gid(CONTAINER_GID);
                }
                c
            }
            Some(hosts) => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--", "/bin/sh", "-c"])
                    .arg(format!(
                        "mount --bind \"$0\" /etc/hosts && exec setpriv --reuid={CONTAINER_UID} --regid={CONTAINER_GID} --clear-groups \"$@\""
                    ))
                    .arg(hosts)
                    .arg(bao);
                c
            }
        };
        cmd.arg("server").arg("-config").arg(self.config());
        if self.seal_json().exists() {
            cmd.arg("-config").arg(self.seal_json());
        }
        cmd.current_dir(&self.dir)
            .env_clear()
            .env("HOME", &self.dir)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(cmd)
    }
}

/// The names a pod's listener certificate is valid for (besides its IP and
/// 127.0.0.1): the headless Service names and the pod name.
pub fn listener_names(opts: &ClusterOptions, pod: &str) -> Vec<String> {
    let base = opts.pod_dns_name(pod);
    let ns = &opts.namespace;
    vec![
        format!("{base}.{ns}.svc.cluster.local"),
        format!("{base}.{ns}.svc"),
        format!("{base}.{ns}"),
        base,
        pod.to_string(),
        "localhost".to_string(),
    ]
}

fn server_config(
    layout: &PodLayout,
    opts: &ClusterOptions,
    name: &str,
    ip: Ipv4Addr,
    join: Option<Ipv4Addr>,
) -> String {
    let data = layout.data().display().to_string();
    let storage = match opts.storage {
        Storage::File => format!("storage \"file\" {{\n  path = \"{data}\"\n}}\n"),
        Storage::Raft => {
            let join = join
                .map(|leader| {
                    let ca = if opts.tls_listener {
                        let mut ca = format!(
                            "    leader_ca_cert_file = \"{}\"\n",
                            crate::listener_tls::ca_file(&layout.cluster_dir(), &opts.name).display()
                        );
                        if opts.listener_client_auth {
                            let (crt, key) = crate::listener_tls::client_files(&layout.cluster_dir(), &opts.name);
                            ca.push_str(&format!(
                                "    leader_client_cert_file = \"{}\"\n    leader_client_key_file = \"{}\"\n",
                                crt.display(),
                                key.display()
                            ));
                        }
                        ca
                    } else {
                        String::new()
                    };
                    let scheme = opts.listener_scheme();
                    // The charts name the leader by its headless Service name.
                    let leader = if opts.cluster_dns {
                        opts.pod_dns_name(&opts.pod_name(0))
                    } else {
                        leader.to_string()
                    };
                    format!("  retry_join {{\n    leader_api_addr = \"{scheme}://{leader}:{API_PORT}\"\n{ca}  }}\n")
                })
                .unwrap_or_default();
            // Without node_id, OpenBao generates a UUID into <data>/node-id.
            let node_id = if opts.set_node_id {
                format!("  node_id = \"{name}\"\n")
            } else {
                String::new()
            };
            format!("storage \"raft\" {{\n  path = \"{data}\"\n{node_id}{join}}}\n")
        }
    };
    // The charts advertise `https://$(HOSTNAME).<sts>-internal:8201`.
    let cluster_host = if opts.cluster_dns {
        opts.pod_dns_name(name)
    } else {
        ip.to_string()
    };
    // A blocked cluster port: the raft listener sits elsewhere, so peers
    // dialing the advertised :8201 are refused.
    let cluster_listen = if opts
        .blocked_cluster_ports
        .iter()
        .any(|o| opts.pod_name(*o) == name)
    {
        BLOCKED_CLUSTER_PORT
    } else {
        CLUSTER_PORT
    };
    let seal = if opts.seal_in != crate::SealIn::HclConfig {
        String::new()
    } else {
        crate::seal::stanza(
            opts.seal,
            &crate::seal::secret_dir(&layout.cluster_dir(), &opts.name),
        )
    };
    let tls = if opts.tls_listener {
        let (cert, key) = crate::listener_tls::files(&layout.dir);
        let mut tls = format!(
            "  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        );
        // The CA that client certificates are checked against: where a
        // chart user names it when clients must present one, and the only
        // place the CA is named when the env names none.
        if opts.listener_client_auth || opts.listener_ca == crate::ListenerCa::ServerConfig {
            tls.push_str(&format!(
                "  tls_client_ca_file = \"{}\"\n",
                crate::listener_tls::ca_file(&layout.cluster_dir(), &opts.name).display()
            ));
        }
        if opts.listener_client_auth {
            tls.push_str("  tls_require_and_verify_client_cert = true\n");
        }
        tls
    } else {
        "  tls_disable = true\n".to_string()
    };
    let scheme = opts.listener_scheme();
    format!(
        "{storage}\n{seal}\
         listener \"tcp\" {{\n  address = \"{ip}:{API_PORT}\"\n  cluster_address = \"{ip}:{cluster_listen}\"\n{tls}}}\n\n\
         api_addr = \"{scheme}://{ip}:{API_PORT}\"\ncluster_addr = \"https://{cluster_host}:{CLUSTER_PORT}\"\ndisable_mlock = true\nui = false\n",
    )
}

fn vault_shim(bao: &Path) -> String {
    let mut s = String::from("#!/bin/sh\n# The sandbox's Vault flavour runs OpenBao: map VAULT_* to BAO_* and exec bao.\n");
    for var in [
        "ADDR",
        "TOKEN",
        "CACERT",
        "CAPATH",
        "FORMAT",
        "NAMESPACE",
        "SKIP_VERIFY",
        "CLIENT_TIMEOUT",
    ] {
        s.push_str(&format!(
            "if [ -n \"${{VAULT_{var}+x}}\" ]; then BAO_{var}=\"$VAULT_{var}\"; export BAO_{var}; fi\n"
        ));
    }
    s.push_str(&format!("exec '{}' \"$@\"\n", bao.display()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_raft_listener_and_optional_join() {
        let l = PodLayout::new(Path::new("/x"), "openbao-1");
        let ip = Ipv4Addr::new(127, 70, 1, 2);
        let o = ClusterOptions::openbao()
            .set_node_id(true)
            .cluster_dns(false);
        let c = server_config(&l, &o, "openbao-1", ip, None);
        assert!(c.contains("path = \"/x/pods/openbao-1/data\""));
        assert!(c.contains("node_id = \"openbao-1\""));
        assert!(c.contains("address = \"127.70.1.2:8200\""));
        assert!(c.contains("cluster_addr = \"https://127.70.1.2:8201\""));
        assert!(!c.contains("retry_join"));
        let c = server_config(&l, &o, "openbao-1", ip, Some(Ipv4Addr::new(127, 70, 0, 9)));
        assert!(c.contains("leader_api_addr = \"http://127.70.0.9:8200\""));
    }

    #[test]
    fn chart_defaults_leave_node_id_to_the_server_and_standalone_uses_file() {
        let l = PodLayout::new(Path::new("/x"), "openbao-0");
        let ip = Ipv4Addr::new(127, 70, 1, 2);
        let generated = ClusterOptions::openbao();
        let c = server_config(&l, &generated, "openbao-0", ip, None);
        assert!(c.contains("storage \"raft\""), "{c}");
        assert!(!c.contains("node_id"), "{c}");
        let file = ClusterOptions::openbao().standalone();
        let c = server_config(&l, &file, "openbao-0", ip, None);
        assert!(
            c.contains("storage \"file\" {\n  path = \"/x/pods/openbao-0/data\""),
            "{c}"
        );
        assert!(!c.contains("raft"), "{c}");
        assert_eq!(file.replicas, 1);
        assert!(file.server_binary().ends_with("bao-2.6/bin/bao"));
        let dns = ClusterOptions::openbao().cluster_dns(true);
        let c = server_config(&l, &dns, "openbao-0", ip, Some(ip));
        assert!(
            c.contains("leader_api_addr = \"http://openbao-0.openbao-internal:8200\""),
            "{c}"
        );
        assert!(
            c.contains("cluster_addr = \"https://openbao-0.openbao-internal:8201\""),
            "{c}"
        );
        assert!(c.contains("cluster_address = \"127.70.1.2:8201\""), "{c}");
        assert!(!c.contains("seal"), "{c}");
        let sealed = ClusterOptions::openbao().seal(crate::seal::Seal::Static);
        let c = server_config(&l, &sealed, "openbao-0", ip, None);
        assert!(
            c.contains("current_key = \"file:///x/secrets/openbao-seal/static.key\""),
            "{c}"
        );
    }
}
