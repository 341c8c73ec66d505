//! A throwaway server inside one of the workload's pods, for the
//! restore-test: a second `bao`/`vault server` process started by exec,
//! listening on loopback only, with its raft storage in a temporary folder
//! on the pod's data volume.
//!
//! Owns the in-pod scripts that start, watch and stop it, and the
//! [`ScratchNode`] that talks to it (the container's CLI pointed at its
//! address). What to do with the server is `ops::restore_test`'s business.
//!
//! # Expected flow
//! 1. One exec runs the supervisor shell with its stdin held open by the
//!    plugin. It removes folders of earlier runs whose supervisor is gone,
//!    creates `<data>/.kubectl-vault-restore-test-<id>`, writes a config
//!    (raft in that folder, `127.0.0.1:<port>` without TLS, no
//!    `retry_join`, raft's `performance_multiplier = 1`: a lone node on
//!    loopback needs no slack, and it leads in about 1.4 s instead of 8 s;
//!    for an auto-unseal snapshot the live server's `seal`
//!    stanzas, copied in the pod from the HCL config files the pod spec
//!    names; with none there, a seal the container's environment sets
//!    (`BAO_SEAL_TYPE`/`VAULT_SEAL_TYPE`), which the server inherits; with
//!    neither, it stops before starting anything and names the JSON config
//!    files it did not read: [`StartError::NoSealConfig`], a refusal),
//!    starts the server without the container's `*_API_ADDR`/
//!    `*_CLUSTER_ADDR` (they would advertise the live pod's addresses;
//!    without a seal, with a clean environment), starts a watchdog, waits
//!    until the server answers and prints `ready <pid>`.
//! 2. The plugin talks to it through other execs (the CLI with the address
//!    overridden), and reads its memory from `/proc/<pid>/status`. A
//!    `restart` line on the supervisor's stdin restarts the server on the
//!    same folder (an auto-unseal server then has to unseal itself from
//!    what is on disk).
//! 3. [`ScratchServer::stop`] closes the supervisor's stdin: it kills the
//!    server, removes the folder and exits 0; one more exec checks that
//!    both are gone.
//!
//! # Guarantees
//! - The server is killed and its folder removed on every exit path: at
//!   the end of stdin (the plugin stopped it, returned early, or its exec
//!   stream closed); by the watchdog, which runs in its own session (so it
//!   survives a kill of the exec's process group), when the supervisor is
//!   gone or the deadline has passed; and by the next run, which removes
//!   folders whose supervisor no longer runs (a restarted container).
//! - A port another process holds makes the server exit; another port is
//!   tried. Nothing is ever sent to a server that answers as initialized
//!   (`ops::restore_test` checks that first).
//! - No argv holds a secret: folders, ports, config paths and the variable
//!   name only. The seal stanza (a transit token, a key file's path) is
//!   copied file to file inside the pod and reaches neither the plugin, nor
//!   a command line, nor a log.

use crate::ops::node::{NodeError, Request, VaultNode};
use crate::ops::secret::{SecretAnswer, SecretBytes};
use crate::transport::exec::{parse_cli_error, ExecNode, StreamStdin, Streaming};
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The prefix of the throwaway server's folder on the data volume.
pub const FOLDER_PREFIX: &str = ".kubectl-vault-restore-test-";

/// The snapshot's file name inside the folder.
const SNAPSHOT_FILE: &str = "snapshot.snap";

mod supervisor;
use supervisor::{unread_json, NO_SEAL_EXIT, SUPERVISOR};

/// `$1`: the folder; `$2`: the server's pid. Exit 0 when both are gone.
const GONE: &str = r#"[ ! -e "$1" ] && ! kill -0 "$2" 2>/dev/null"#;

/// `$1`: the server's pid. Prints `VmHWM` and `VmRSS` lines.
const MEMORY: &str = r#"grep -E '^Vm(HWM|RSS):' "/proc/$1/status""#;

/// How many ports are tried when the chosen one is taken.
const PORT_ATTEMPTS: usize = 4;

/// The server's memory, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// Peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
    /// Resident set size when read (VmRSS).
    pub rss_bytes: u64,
}

/// The supervisor's exec session: its stdin (held open; dropping it is the
/// end of stdin) and stdout.
struct Session {
    stdin: tokio::io::DuplexStream,
    stdout: BufReader<crate::transport::exec::StdoutStream>,
    streaming: Streaming,
}

/// A throwaway server running in a pod; stopped by [`Self::stop`], or by
/// its supervisor and watchdog when this value is dropped without it.
pub struct ScratchServer {
    node: ScratchNode,
    pod_exec: ExecNode,
    pod: String,
    dir: String,
    /// The server's pid; a [`Self::restart`] changes it.
    pid: AtomicU32,
    port: u16,
    /// In a mutex only so that the server can be shared (`Sync`) while a
    /// feed streams into it; taken once, by [`Self::stop`].
    session: std::sync::Mutex<Option<Session>>,
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the server container of pod {pod} mounts no PersistentVolumeClaim: the restore-test keeps its throwaway server's storage on the data volume")]
    NoDataVolume { pod: String },
    #[error("the pod spec of {pod} names no server config (`-config=PATH` on the container's command line), so the live server's seal stanza cannot be found for the throwaway server")]
    NoServerConfig { pod: String },
    #[error("{}", no_seal_config(pod, configs, json))]
    NoSealConfig {
        pod: String,
        /// The config files or folders the pod spec names.
        configs: Vec<String>,
        /// JSON config files among them, which are not read.
        json: Vec<String>,
    },
    #[error("could not start a throwaway server in pod {pod}: {reason}")]
    Failed { pod: String, reason: String },
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl StartError {
    /// True when the pod cannot host the test as it is configured (no data
    /// volume, no seal the throwaway server can take up): a precondition to
    /// fix, refused before anything started, not a run to repeat.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StartError::NoDataVolume { .. }
                | StartError::NoServerConfig { .. }
                | StartError::NoSealConfig { .. }
        )
    }
}

fn no_seal_config(pod: &str, configs: &[String], json: &[String]) -> String {
    let mut s = format!(
        "pod {pod} has no top-level `seal` stanza in the HCL server config it names ({}), and its container's environment sets neither BAO_SEAL_TYPE nor VAULT_SEAL_TYPE, so the throwaway server cannot run with the live server's seal",
        configs.join(", ")
    );
    if !json.is_empty() {
        s.push_str(&format!(
            " (the JSON config {} is not read: the stanza is copied from HCL only)",
            json.join(", ")
        ));
    }
    s
}

impl ScratchServer {
    /// Starts a throwaway server in `exec`'s container. The watchdog kills
    /// it after `deadline` whatever happens. With `seal`, the server runs
    /// with the live server's `seal` stanzas, copied inside the pod from
    /// the config files the pod spec names ([`ExecNode::server_configs`]):
    /// the plugin never reads them (they may hold a provider's token).
    pub async fn start(
        exec: &ExecNode,
        deadline: Duration,
        seal: bool,
    ) -> Result<ScratchServer, StartError> {
        let pod = exec.name().to_owned();
        if seal && exec.server_configs().is_empty() {
            return Err(StartError::NoServerConfig { pod });
        }
        let data = exec
            .data_dir()
            .ok_or_else(|| StartError::NoDataVolume { pod: pod.clone() })?
            .trim_end_matches('/')
            .to_owned();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port: u16 = rand::random_range(20000..60000);
            let id: u32 = rand::random();
            let dir = format!("{data}/{FOLDER_PREFIX}{id:08x}");
            match Self::launch(exec, &dir, port, deadline, seal).await? {
                Ok(server) => return Ok(server),
                Err(reason) if reason.contains("address already in use") => {
                    tracing::debug!(%pod, port, "port taken; trying another");
                    last = reason;
                }
                Err(reason) => return Err(StartError::Failed { pod, reason }),
            }
        }
        Err(StartError::Failed { pod, reason: last })
    }

    /// One start attempt: `Ok(Err(reason))` when the supervisor exited
    /// before the server answered.
    async fn launch(
        exec: &ExecNode,
        dir: &str,
        port: u16,
        deadline: Duration,
        seal: bool,
    ) -> Result<Result<ScratchServer, String>, StartError> {
        let pod = exec.name().to_owned();
        let cli = exec.cli();
        let mut argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            SUPERVISOR.to_owned(),
            cli.binary().to_owned(),
            dir.to_owned(),
            port.to_string(),
            (port + 1).to_string(),
            deadline.as_secs().max(60).to_string(),
            cli.addr_variable().to_owned(),
            if seal { "seal" } else { "" }.to_owned(),
        ];
        if seal {
            argv.extend(exec.server_configs().iter().cloned());
        }
        let (stdin_reader, stdin) = tokio::io::duplex(64);
        let mut streaming = exec
            .stream(
                argv,
                StreamStdin {
                    first_line: None,
                    body: Some(stdin_reader),
                },
                true,
            )
            .await?;
        let Some(stdout) = streaming.stdout.take() else {
            return Err(StartError::Failed {
                pod,
                reason: "the exec session has no stdout".into(),
            });
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(90), stdout.read_line(&mut line)).await;
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else {
            drop(stdin);
            if read.is_err() {
                return Err(StartError::Failed {
                    pod,
                    reason: "the supervisor said nothing within 90s".into(),
                });
            }
            let waited = tokio::time::timeout(Duration::from_secs(30), streaming.wait()).await;
            if let Ok(Ok((code, _, stderr))) = &waited {
                if *code == NO_SEAL_EXIT {
                    return Err(StartError::NoSealConfig {
                        pod,
                        configs: exec.server_configs().to_vec(),
                        json: unread_json(stderr),
                    });
                }
            }
            let reason = match waited {
                Ok(Ok((code, _, stderr))) => format!(
                    "the server exited at start (supervisor exit {code}): {}",
                    stderr.trim()
                ),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the supervisor did not exit".to_owned(),
            };
            return Ok(Err(reason));
        };
        let addr = format!("http://127.0.0.1:{port}");
        tracing::info!(%pod, %addr, pid, folder = dir, "throwaway server started");
        Ok(Ok(ScratchServer {
            node: ScratchNode {
                exec: exec.clone().with_server_addr(&addr),
                label: format!("{pod}/restore-test"),
            },
            pod_exec: exec.clone(),
            pod,
            dir: dir.to_owned(),
            pid: AtomicU32::new(pid),
            port,
            session: std::sync::Mutex::new(Some(Session {
                stdin,
                stdout,
                streaming,
            })),
        }))
    }

    fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Stops the server and starts it again on the same folder and port
    /// (the supervisor does it: TERM, KILL after 10 s); returns when it
    /// answers again, sealed or not.
    pub async fn restart(&self) -> Result<(), NodeError> {
        let taken = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut session) = taken else {
            return Err(NodeError::Unreachable(
                "the throwaway server's supervisor is gone".into(),
            ));
        };
        let mut line = String::new();
        let answered = match session.stdin.write_all(b"restart\n").await {
            Ok(()) => {
                tokio::time::timeout(Duration::from_secs(90), session.stdout.read_line(&mut line))
                    .await
                    .is_ok_and(|read| read.is_ok())
            }
            Err(_) => false,
        };
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse::<u32>().ok());
        if let (true, Some(pid)) = (answered, pid) {
            self.pid.store(pid, Ordering::SeqCst);
            *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
            tracing::info!(pod = %self.pod, pid, "throwaway server restarted");
            return Ok(());
        }
        // The supervisor exited (its trap killed the server and removed the
        // folder) or hangs: its stdin closes either way.
        let Session {
            stdin, streaming, ..
        } = session;
        drop(stdin);
        let why = match tokio::time::timeout(Duration::from_secs(30), streaming.wait()).await {
            Ok(Ok((code, _, stderr))) => format!(
                "the throwaway server did not come back after its restart (supervisor exit {code}): {}",
                stderr.trim()
            ),
            _ => "the throwaway server did not come back after its restart".to_owned(),
        };
        Err(NodeError::Unreachable(why))
    }

    /// The node to send requests to.
    pub fn node(&self) -> &ScratchNode {
        &self.node
    }

    pub fn pod(&self) -> &str {
        &self.pod
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn folder(&self) -> &str {
        &self.dir
    }

    /// The server's memory now (`None` when it cannot be read).
    pub async fn memory(&self) -> Option<Memory> {
        let out = self
            .pod_exec
            .run(
                vec![
                    "sh".into(),
                    "-c".into(),
                    MEMORY.into(),
                    "sh".into(),
                    self.pid().to_string(),
                ],
                None,
            )
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        Some(Memory {
            peak_rss_bytes: field("VmHWM:")?,
            rss_bytes: field("VmRSS:")?,
        })
    }

    /// Streams a snapshot into a file in the server's folder; returns the
    /// bytes the pod received. The caller decides whether the bytes were
    /// complete before [`Self::restore_file`] applies them.
    pub async fn receive<R>(&self, body: R) -> Result<u64, NodeError>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            r#"cat > "$1""#.to_owned(),
            "sh".to_owned(),
            format!("{}/{SNAPSHOT_FILE}", self.dir),
        ];
        let streaming = self
            .pod_exec
            .stream(
                argv,
                StreamStdin {
                    first_line: None,
                    body: Some(body),
                },
                false,
            )
            .await?;
        let (code, sent, stderr) = streaming.wait().await?;
        if code != 0 {
            return Err(parse_cli_error(&stderr, code));
        }
        Ok(sent)
    }

    /// `operator raft snapshot restore [-force]` of the received file, with
    /// `token` on stdin.
    pub async fn restore_file(
        &self,
        token: &crate::ops::secret::Secret,
        force: bool,
    ) -> Result<(), NodeError> {
        let file = format!("{}/{SNAPSHOT_FILE}", self.dir);
        let mut args = vec!["operator", "raft", "snapshot", "restore"];
        if force {
            args.push("-force");
        }
        args.push(&file);
        let argv = self.node.exec.with_token_argv(&args);
        let mut line = Vec::with_capacity(token.expose().len() + 1);
        line.extend_from_slice(token.expose().as_bytes());
        line.push(b'\n');
        let out = self
            .node
            .exec
            .run(argv, Some(SecretBytes::new(line)))
            .await?;
        if out.exit_code != 0 {
            return Err(parse_cli_error(&out.stderr, out.exit_code));
        }
        Ok(())
    }

    /// Stops the server and removes its folder; then checks, by one more
    /// exec, that neither is left.
    pub async fn stop(self) -> Result<(), NodeError> {
        let pod = self.pod.clone();
        let session = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(session) = session {
            let Session {
                stdin,
                mut stdout,
                streaming,
            } = session;
            drop(stdin);
            let ended = tokio::time::timeout(Duration::from_secs(30), async move {
                let mut rest = Vec::new();
                let _ = stdout.read_to_end(&mut rest).await;
                streaming.wait().await
            })
            .await;
            match ended {
                Ok(Ok((0, _, _))) => {}
                Ok(Ok((code, _, stderr))) => {
                    tracing::warn!(%pod, code, stderr = %stderr.trim(), "the restore-test supervisor ended badly");
                }
                Ok(Err(e)) => {
                    tracing::warn!(%pod, error = %e, "the restore-test supervisor's stream broke")
                }
                Err(_) => {
                    tracing::warn!(%pod, "the restore-test supervisor did not exit within 30s")
                }
            }
        }
        let out = self
            .pod_exec
            .run(
                vec![
                    "sh".into(),
                    "-c".into(),
                    GONE.into(),
                    "sh".into(),
                    self.dir.clone(),
                    self.pid().to_string(),
                ],
                None,
            )
            .await?;
        if out.exit_code != 0 {
            return Err(NodeError::Malformed(format!(
                "the throwaway server (pid {}) or its folder {} is still in pod {pod}; its watchdog removes them",
                self.pid(),
                self.dir
            )));
        }
        tracing::info!(%pod, folder = %self.dir, "throwaway server stopped and its folder removed");
        Ok(())
    }
}

impl crate::ops::restore_test::Restart for ScratchServer {
    async fn restart(&self) -> Result<(), NodeError> {
        ScratchServer::restart(self).await
    }
}

/// The throwaway server, reached by the container's CLI pointed at it.
#[derive(Clone)]
pub struct ScratchNode {
    exec: ExecNode,
    label: String,
}

impl VaultNode for ScratchNode {
    fn name(&self) -> &str {
        &self.label
    }

    async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
        self.exec.call(req).await
    }

    async fn call_secret(&self, req: Request<'_>) -> Result<SecretAnswer, NodeError> {
        self.exec.call_secret(req).await
    }

    // `init` keeps the trait's default: a plain `sys/init` whose answer is
    // kept nowhere but in memory (the server is thrown away with it), never
    // the container's detached init with its copy on the data volume.
}
