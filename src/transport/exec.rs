//! The exec transport: a Vault API request becomes one run of the
//! container's own CLI (`bao` or `vault`) through `pods/exec`.
//!
//! Owns the mapping from [`Request`] to argv + stdin and from the CLI's
//! output back to JSON or a [`NodeError`]. The argv holds only the verb, the
//! flags and the API path: request bodies and tokens travel on stdin, so no
//! secret reaches the exec URL (and the API server's audit log) or the pod's
//! process list. The container's own `VAULT_ADDR`/`BAO_ADDR` and TLS settings
//! apply because the CLI runs inside it.
//!
//! Here the node, its argv and stdin; by noun: `collected` (a short exec
//! read whole), `streaming` (an exec larger than memory) and `cli_output`
//! (the CLI's output read back).

use crate::ops::node::{Method, NodeError, Request, VaultNode};
use crate::ops::secret::{SecretAnswer, SecretBytes};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use serde_json::Value;

mod cli_output;
mod collected;
mod streaming;

pub use cli_output::{interpret, interpret_secret, parse_cli_error};
pub use collected::run_in;
pub use streaming::{stream_in, StdoutStream, StreamStdin, Streaming};

/// Which CLI the container ships. Decides the binary name and the token variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CliFlavour {
    Bao,
    Vault,
}

impl CliFlavour {
    pub fn binary(self) -> &'static str {
        match self {
            CliFlavour::Bao => "bao",
            CliFlavour::Vault => "vault",
        }
    }

    pub fn token_variable(self) -> &'static str {
        match self {
            CliFlavour::Bao => "BAO_TOKEN",
            CliFlavour::Vault => "VAULT_TOKEN",
        }
    }

    /// The variable that names the server the CLI talks to.
    pub fn addr_variable(self) -> &'static str {
        match self {
            CliFlavour::Bao => "BAO_ADDR",
            CliFlavour::Vault => "VAULT_ADDR",
        }
    }
}

/// One Vault/OpenBao container reached by exec.
#[derive(Clone)]
pub struct ExecNode {
    pods: Api<Pod>,
    pod: String,
    container: String,
    cli: CliFlavour,
    /// Where the server container mounts its PersistentVolumeClaim, if it does.
    data_dir: Option<String>,
    /// The server config files or folders the container's command line
    /// names (`-config=PATH`), absolute paths as the container sees them.
    server_configs: Vec<String>,
    /// Another server than the container's own for the CLI to talk to (a
    /// loopback address, never a secret): see [`Self::with_server_addr`].
    server_addr: Option<String>,
}

/// What one exec returned.
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl ExecNode {
    pub fn new(pods: Api<Pod>, pod: String, container: String, cli: CliFlavour) -> Self {
        ExecNode {
            pods,
            pod,
            container,
            cli,
            data_dir: None,
            server_configs: Vec::new(),
            server_addr: None,
        }
    }

    /// The same container, with the CLI pointed at `addr` (for example a
    /// second server started in the pod on `http://127.0.0.1:PORT`) instead
    /// of the container's own `BAO_ADDR`/`VAULT_ADDR`.
    #[must_use]
    pub fn with_server_addr(mut self, addr: &str) -> Self {
        self.server_addr = Some(addr.to_owned());
        self
    }

    /// The shell prelude that exports the overriding address, if any. The
    /// address is built by this tool from a port number: no quoting needed
    /// beyond the single quotes.
    fn addr_prelude(&self) -> String {
        match &self.server_addr {
            Some(addr) => format!("{v}='{addr}'; export {v}; ", v = self.cli.addr_variable()),
            None => String::new(),
        }
    }

    /// Sets the container's data volume (see [`Self::data_dir`]).
    #[must_use]
    pub fn with_data_dir(mut self, dir: Option<String>) -> Self {
        self.data_dir = dir;
        self
    }

    /// Sets the server config paths (see [`Self::server_configs`]).
    #[must_use]
    pub fn with_server_configs(mut self, paths: Vec<String>) -> Self {
        self.server_configs = paths;
        self
    }

    /// The server config files or folders the container's command line
    /// names: where the live server's `seal` stanza is read, inside the pod.
    pub fn server_configs(&self) -> &[String] {
        &self.server_configs
    }

    pub fn cli(&self) -> CliFlavour {
        self.cli
    }

    /// The mount path of the pod's PersistentVolumeClaim in the server
    /// container: the only place in the pod that survives its deletion.
    pub fn data_dir(&self) -> Option<&str> {
        self.data_dir.as_deref()
    }

    /// Runs `argv` in the container with `stdin` (if any), collecting output.
    pub async fn run(
        &self,
        argv: Vec<String>,
        stdin: Option<SecretBytes>,
    ) -> Result<ExecOutput, NodeError> {
        run_in(&self.pods, &self.pod, &self.container, argv, stdin).await
    }

    /// [`stream_in`] in this node's container.
    pub async fn stream<R>(
        &self,
        argv: Vec<String>,
        stdin: StreamStdin<R>,
        stream_stdout: bool,
    ) -> Result<Streaming, NodeError>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        stream_in(
            &self.pods,
            &self.pod,
            &self.container,
            argv,
            stdin,
            stream_stdout,
        )
        .await
    }

    /// `sh -c` that reads the first stdin line into the CLI's token variable,
    /// then runs the CLI with `args` (which go after the binary name).
    pub fn with_token_argv(&self, args: &[&str]) -> Vec<String> {
        let script = format!(
            "{}IFS= read -r {v}; export {v}; exec \"$0\" \"$@\"",
            self.addr_prelude(),
            v = self.cli.token_variable()
        );
        let mut argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script,
            self.cli.binary().to_owned(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    fn argv(&self, req: &Request<'_>) -> Vec<String> {
        let verb = match req.method {
            Method::Read => "read",
            Method::Write => "write",
            Method::Delete => "delete",
        };
        let mut argv = Vec::new();
        if req.token.is_some() {
            // The token is the first stdin line; `read` consumes exactly that line.
            let script = format!(
                "{}IFS= read -r {v}; export {v}; exec \"$0\" \"$@\"",
                self.addr_prelude(),
                v = self.cli.token_variable()
            );
            argv.extend(["sh".to_owned(), "-c".to_owned(), script]);
        } else if self.server_addr.is_some() {
            let script = format!("{}exec \"$0\" \"$@\"", self.addr_prelude());
            argv.extend(["sh".to_owned(), "-c".to_owned(), script]);
        }
        argv.extend([
            self.cli.binary().to_owned(),
            verb.to_owned(),
            "-format=json".to_owned(),
            req.path.to_owned(),
        ]);
        if req.body.is_some() {
            argv.push("-".to_owned());
        }
        argv
    }
}

/// Exec parameters for the server container: stdout and stderr always,
/// stdin when there is something to send, no TTY.
fn attach_params(container: &str, stdin: bool) -> AttachParams {
    AttachParams {
        container: Some(container.to_owned()),
        stdin,
        stdout: true,
        stderr: true,
        tty: false,
        max_stdin_buf_size: Some(64 * 1024),
        max_stdout_buf_size: Some(256 * 1024),
        max_stderr_buf_size: Some(64 * 1024),
    }
}

fn exit_code(status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> i32 {
    if status.status.as_deref() == Some("Success") {
        return 0;
    }
    status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.parse().ok())
        .unwrap_or(-1)
}

fn kube_error(pod: &str, e: kube::Error) -> NodeError {
    match e {
        kube::Error::Api(s) if s.code == 403 => NodeError::Forbidden(format!(
            "exec into pod {pod} (pods/exec create): {}",
            s.message
        )),
        kube::Error::Api(s) if s.code == 404 => {
            NodeError::PodGone(format!("pod {pod}: {}", s.message))
        }
        other => NodeError::Unreachable(format!(
            "exec into pod {pod}: {}",
            super::api_reason(&other)
        )),
    }
}

/// The CLI's stdin: the token on the first line, then the body.
fn stdin_of(req: Request<'_>) -> Option<SecretBytes> {
    match (req.token, req.body) {
        (None, body) => body,
        (Some(token), body) => {
            let mut bytes = Vec::with_capacity(
                token.expose().len() + 1 + body.as_ref().map_or(0, |b| b.expose().len()),
            );
            bytes.extend_from_slice(token.expose().as_bytes());
            bytes.push(b'\n');
            if let Some(b) = body {
                bytes.extend_from_slice(b.expose());
            }
            Some(SecretBytes::new(bytes))
        }
    }
}

impl VaultNode for ExecNode {
    fn name(&self) -> &str {
        &self.pod
    }

    async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
        let argv = self.argv(&req);
        interpret(self.run(argv, stdin_of(req)).await?)
    }

    async fn call_secret(&self, req: Request<'_>) -> Result<SecretAnswer, NodeError> {
        let argv = self.argv(&req);
        interpret_secret(self.run(argv, stdin_of(req)).await?)
    }

    async fn init(&self, body: SecretBytes) -> Result<SecretAnswer, NodeError> {
        crate::transport::init_copy::init(self, body).await
    }

    async fn recover_init_response(&self) -> Result<Option<SecretAnswer>, NodeError> {
        crate::transport::init_copy::recover(self).await
    }

    async fn clear_init_response(&self) -> Result<(), NodeError> {
        crate::transport::init_copy::clear(self).await
    }
}
