//! A pod's containers as an exec sees them: the charts' container user,
//! which container a command runs in, and the environment it gets.

use std::net::Ipv4Addr;

use super::{PodLayout, API_PORT, CLUSTER_PORT};
use crate::options::ClusterOptions;

/// The charts' container user and group (`vault`/`openbao`, uid 100, and
/// the pod's fsGroup 1000): exec'd commands run as them.
pub const CONTAINER_UID: u32 = 100;
pub const CONTAINER_GID: u32 = 1000;

/// Whether the sandbox can run commands as another user.
pub fn running_as_root() -> bool {
    // SAFETY: a plain syscall without arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Which container of the pod an exec targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    /// `openbao` / `vault`: the CLI is in PATH and the address env is set.
    Main,
    /// `agent`: a bare shell environment.
    Sidecar,
}

/// Environment of a process exec'd into a container (nothing else leaks in).
pub fn exec_env(
    opts: &ClusterOptions,
    layout: &PodLayout,
    pod: &str,
    ip: Ipv4Addr,
    kind: ContainerKind,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOME".to_string(), layout.home().display().to_string()),
        ("TMPDIR".to_string(), layout.tmp().display().to_string()),
        ("HOSTNAME".to_string(), pod.to_string()),
        ("POD_IP".to_string(), ip.to_string()),
    ];
    match kind {
        ContainerKind::Main => {
            env.push((
                "PATH".to_string(),
                format!("{}:/usr/local/bin:/usr/bin:/bin", layout.bin().display()),
            ));
            // The chart sets `*_ADDR=http://127.0.0.1:8200`: the pod's own
            // loopback (see `loopback`), or its IP where pods share the
            // host's network.
            let scheme = opts.listener_scheme();
            let host = if opts.loopback_addr {
                Ipv4Addr::LOCALHOST
            } else {
                ip
            };
            env.push((
                opts.flavour.addr_env().to_string(),
                format!("{scheme}://{host}:{API_PORT}"),
            ));
            let p = opts.flavour.env_prefix();
            if opts.tls_listener {
                // As a chart user adds them through `extraEnvironmentVars`.
                let cluster_dir = layout.cluster_dir();
                match opts.listener_ca {
                    crate::ListenerCa::CaCert => env.push((
                        format!("{p}_CACERT"),
                        crate::listener_tls::ca_file(&cluster_dir, &opts.name)
                            .display()
                            .to_string(),
                    )),
                    crate::ListenerCa::CaPath => env.push((
                        format!("{p}_CAPATH"),
                        crate::listener_tls::secret_dir(&cluster_dir, &opts.name)
                            .display()
                            .to_string(),
                    )),
                    crate::ListenerCa::ServerConfig => {}
                }
                if opts.listener_client_auth {
                    let (crt, key) = crate::listener_tls::client_files(&cluster_dir, &opts.name);
                    env.push((format!("{p}_CLIENT_CERT"), crt.display().to_string()));
                    env.push((format!("{p}_CLIENT_KEY"), key.display().to_string()));
                }
            }
            let chart = [
                (
                    format!("{p}_API_ADDR"),
                    format!("{scheme}://{ip}:{API_PORT}"),
                ),
                (
                    format!("{p}_CLUSTER_ADDR"),
                    format!("https://{}:{CLUSTER_PORT}", opts.pod_dns_name(pod)),
                ),
                (format!("{p}_K8S_POD_NAME"), pod.to_string()),
                (format!("{p}_K8S_NAMESPACE"), opts.namespace.clone()),
                ("HOST_IP".to_string(), "127.0.0.1".to_string()),
                ("SKIP_CHOWN".to_string(), "true".to_string()),
                ("SKIP_SETCAP".to_string(), "true".to_string()),
            ];
            env.extend(chart);
            // The container's seal variables reach exec'd commands too.
            env.extend(crate::seal::env(opts, &layout.cluster_dir()).unwrap_or_default());
        }
        ContainerKind::Sidecar => {
            env.push((
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn exec_env_carries_the_charts_variables() {
        let o = ClusterOptions::vault().namespace("ns1");
        let l = PodLayout::new(Path::new("/x"), "vault-1");
        let env = exec_env(
            &o,
            &l,
            "vault-1",
            Ipv4Addr::new(127, 70, 0, 4),
            ContainerKind::Main,
        );
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing: {env:?}"))
        };
        let expected = if o.loopback_addr {
            "http://127.0.0.1:8200"
        } else {
            "http://127.70.0.4:8200"
        };
        assert_eq!(get("VAULT_ADDR"), expected);
        let shared = exec_env(
            &o.clone().loopback_addr(false),
            &l,
            "vault-1",
            Ipv4Addr::new(127, 70, 0, 4),
            ContainerKind::Main,
        );
        assert!(shared.contains(&("VAULT_ADDR".into(), "http://127.70.0.4:8200".into())));
        assert_eq!(get("VAULT_API_ADDR"), "http://127.70.0.4:8200");
        assert_eq!(
            get("VAULT_CLUSTER_ADDR"),
            "https://vault-1.vault-internal:8201"
        );
        assert_eq!(get("VAULT_K8S_POD_NAME"), "vault-1");
        assert_eq!(get("VAULT_K8S_NAMESPACE"), "ns1");
        assert_eq!(get("SKIP_SETCAP"), "true");
        let sidecar = exec_env(
            &o,
            &l,
            "vault-1",
            Ipv4Addr::new(127, 70, 0, 4),
            ContainerKind::Sidecar,
        );
        assert!(!sidecar.iter().any(|(n, _)| n.starts_with("VAULT_")));
    }
}
