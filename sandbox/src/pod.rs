//! One pod's machinery: its folder, loopback IP, server config, exec
//! environment and health probe.
//!
//! Owns the on-disk layout `<dir>/pods/NAME-i/{data,config.hcl,server.log,bin,ip}`
//! and how a `bao server` and an exec'd command are launched. Which pods exist
//! and when they start is decided by [`crate::fleet`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::options::{ClusterOptions, Flavour, Storage};

/// The charts' container user and group (`vault`/`openbao`, uid 100, and
/// the pod's fsGroup 1000): exec'd commands run as them.
pub const CONTAINER_UID: u32 = 100;
pub const CONTAINER_GID: u32 = 1000;

/// Whether the sandbox can run commands as another user.
pub fn running_as_root() -> bool {
    // SAFETY: a plain syscall without arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Vault API port inside the pod.
pub const API_PORT: u16 = 8200;
/// Raft cluster port inside the pod.
pub const CLUSTER_PORT: u16 = 8201;
/// Where a pod with a blocked cluster port listens for raft instead.
const BLOCKED_CLUSTER_PORT: u16 = 18201;

/// The folder of one pod.
#[derive(Clone, Debug)]
pub struct PodLayout {
    /// `<dir>/pods/NAME-i`.
    pub dir: PathBuf,
}

impl PodLayout {
    /// Layout of pod `name` under the cluster folder.
    pub fn new(cluster_dir: &Path, name: &str) -> Self {
        Self {
            dir: cluster_dir.join("pods").join(name),
        }
    }

    /// Raft storage: deleting it is losing the PVC.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The main container's HOME: an emptyDir, as the charts mount it (kept
    /// across container restarts, emptied when the pod is deleted).
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The container's `/tmp` (exec'd commands get it as `TMPDIR`): its
    /// writable layer, emptied on every container restart.
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// A container restart: its writable layer (`/tmp`) starts empty.
    pub fn reset_container_files(&self) -> io::Result<()> {
        reset_dir(&self.tmp())
    }

    /// A new pod (created, or recreated after a deletion): emptyDir volumes
    /// and the container layer start empty; the PVC (`data`) is kept.
    pub fn reset_pod_files(&self) -> io::Result<()> {
        reset_dir(&self.home())?;
        reset_dir(&self.tmp())
    }

    /// The cluster folder this pod's folder sits in (`<dir>`).
    pub fn cluster_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// `config.hcl`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.hcl")
    }

    /// The second config file of [`crate::SealIn::JsonConfig`].
    pub fn seal_json(&self) -> PathBuf {
        self.dir.join("seal.json")
    }

    /// The server's stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Prepended to the main container's PATH.
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }

    fn ip_file(&self) -> PathBuf {
        self.dir.join("ip")
    }

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

    /// The volumes a container writes (the PVC, HOME, `/tmp`) belong to the
    /// charts' container user, as `fsGroup` and the image arrange it; the
    /// pod folder itself, the exec'd commands' working directory, stays
    /// root's and is not writable to them. Only when the sandbox runs as
    /// root, the only way it can hand files to another user.
    fn grant_volumes(&self) -> io::Result<()> {
        if !running_as_root() {
            return Ok(());
        }
        for dir in [self.data(), self.home(), self.tmp()] {
            std::os::unix::fs::chown(&dir, Some(CONTAINER_UID), Some(CONTAINER_GID))?;
        }
        Ok(())
    }

    /// The IP this pod had in an earlier run of the same folder, if any.
    pub fn previous_ip(&self) -> Option<Ipv4Addr> {
        std::fs::read_to_string(self.ip_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Deletes the raft data (the PVC is lost) and recreates an empty folder.
    pub fn wipe_data(&self) -> io::Result<()> {
        reset_dir(&self.data())
    }

    /// What each start of the server container wrote, oldest first.
    /// `server.log` keeps every start (tests count `sys/init`s in it); a
    /// marker line before each start splits it into container instances,
    /// as the kubelet keeps the current and the previous one.
    pub fn container_logs(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let mut out = vec![String::new()];
        for line in text.split_inclusive('\n') {
            if line.trim_end() == START_MARKER {
                out.push(String::new());
            } else if let Some(last) = out.last_mut() {
                last.push_str(line);
            }
        }
        if out.len() > 1 && out[0].is_empty() {
            out.remove(0);
        }
        out
    }

    /// The last lines of the current container's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.container_logs().pop().unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
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

/// The line `server.log` gets before each start of the server; never served.
const START_MARKER: &str = "#kube-sandbox: container started";

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

/// One pod as the API reports it.
#[derive(Clone, Debug)]
pub struct PodView {
    /// Ordinal in the StatefulSet.
    pub ordinal: u32,
    /// `NAME-i`.
    pub name: String,
    /// metadata.uid.
    pub uid: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// metadata.creationTimestamp.
    pub created: Timestamp,
    /// state.running.startedAt of the main container.
    pub started_at: Timestamp,
    /// Main container restarts.
    pub restart_count: u32,
    /// Cached health.
    pub health: Health,
    /// Whether the server process is alive.
    pub running: bool,
    /// metadata.resourceVersion.
    pub resource_version: u64,
    /// Server pid, if running.
    pub pid: Option<u32>,
    /// Created but not started yet: phase Pending, no IP, containers
    /// waiting in ContainerCreating.
    pub pending: bool,
    /// metadata.deletionTimestamp: deleted, still Running while it terminates.
    pub deleting: Option<Timestamp>,
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

/// Picks a random free loopback IP in 127.64.0.0/10, or keeps `preferred` if still free.
pub fn allocate_ip(preferred: Option<Ipv4Addr>) -> io::Result<Ipv4Addr> {
    if let Some(ip) = preferred {
        if ports_free(ip) {
            return Ok(ip);
        }
    }
    let mut rng = rand::rng();
    for _ in 0..200 {
        let ip = Ipv4Addr::new(
            127,
            rng.random_range(64..128),
            rng.random(),
            rng.random_range(1..255),
        );
        if ports_free(ip) {
            return Ok(ip);
        }
    }
    Err(io::Error::other("no free loopback IP in 127.64.0.0/10"))
}

fn ports_free(ip: Ipv4Addr) -> bool {
    let a = TcpListener::bind(SocketAddr::from((ip, API_PORT)));
    let b = TcpListener::bind(SocketAddr::from((ip, CLUSTER_PORT)));
    a.is_ok() && b.is_ok()
}

/// A connection to a listener, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// The last answer of `GET /v1/sys/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not probed since the last (re)start.
    Unknown,
    /// No HTTP answer.
    Unreachable,
    /// The HTTP status: 200 active, 429 standby, 501 uninitialized, 503 sealed.
    Code(u16),
}

impl Health {
    /// The chart's readiness rule: initialized, unsealed, active or standby.
    pub fn is_ready(self) -> bool {
        matches!(self, Health::Code(200) | Health::Code(429))
    }

    /// `GET /v1/sys/health` over a raw HTTP/1.1 connection with short timeouts.
    pub async fn probe(ip: Ipv4Addr, tls: bool, client_auth: bool) -> Health {
        let probe = async {
            let tcp = tokio::net::TcpStream::connect((ip, API_PORT)).await.ok()?;
            let mut s: Box<dyn Stream> = if tls {
                let connector = crate::listener_tls::probe_connector(client_auth)?;
                let name =
                    rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(ip).into());
                Box::new(connector.connect(name, tcp).await.ok()?)
            } else {
                Box::new(tcp)
            };
            let req = format!(
                "GET /v1/sys/health HTTP/1.1\r\nHost: {ip}:{API_PORT}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::with_capacity(64);
            let mut chunk = [0u8; 64];
            while buf.len() < 12 {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf);
            head.split_whitespace().nth(1)?.parse::<u16>().ok()
        };
        match tokio::time::timeout(Duration::from_millis(1500), probe).await {
            Ok(Some(code)) => Health::Code(code),
            _ => Health::Unreachable,
        }
    }
}

/// Whether something accepts TCP connections on `ip:port`.
pub async fn is_listening(ip: Ipv4Addr, port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect((ip, port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Empties `dir` (creating it if missing).
fn reset_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_splits_into_container_instances_at_each_start() {
        let dir = tempfile::tempdir().unwrap();
        let l = PodLayout::new(dir.path(), "openbao-0");
        std::fs::create_dir_all(l.log().parent().unwrap()).unwrap();
        assert_eq!(l.container_logs(), [""]);
        let text = format!("{START_MARKER}\na\nb\n{START_MARKER}\nc\n");
        std::fs::write(l.log(), text).unwrap();
        assert_eq!(l.container_logs(), ["a\nb\n", "c\n"]);
        assert_eq!(l.log_tail(), "c");
    }

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

    #[test]
    fn readiness_follows_the_chart() {
        assert!(Health::Code(200).is_ready());
        assert!(Health::Code(429).is_ready());
        for h in [
            Health::Code(501),
            Health::Code(503),
            Health::Unreachable,
            Health::Unknown,
        ] {
            assert!(!h.is_ready());
        }
    }

    #[test]
    fn allocated_ips_are_in_the_range() {
        let ip = allocate_ip(None).unwrap();
        let o = ip.octets();
        assert_eq!(o[0], 127);
        assert!((64..128).contains(&o[1]));
    }
}
