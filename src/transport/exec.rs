//! The exec transport: a Vault API request becomes one run of the
//! container's own CLI (`bao` or `vault`) through `pods/exec`.
//!
//! Owns the mapping from [`Request`] to argv + stdin and from the CLI's
//! output back to JSON or a [`NodeError`]. The argv holds only the verb, the
//! flags and the API path: request bodies and tokens travel on stdin, so no
//! secret reaches the exec URL (and the API server's audit log) or the pod's
//! process list. The container's own `VAULT_ADDR`/`BAO_ADDR` and TLS settings
//! apply because the CLI runs inside it.

use crate::ops::node::{Method, NodeError, Request, VaultNode};
use crate::ops::secret::{SecretAnswer, SecretBytes};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// How long one collected exec may take: every Vault API call is short.
/// Snapshots stream through [`stream_in`], which has its own deadline.
const EXEC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
/// The most output a collected exec may return (a raft configuration or a
/// seal status is a few KiB).
const MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Runs one command in a container and collects its output and exit code,
/// within [`EXEC_DEADLINE`] and [`MAX_OUTPUT`].
pub async fn run_in(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    argv: Vec<String>,
    stdin: Option<SecretBytes>,
) -> Result<ExecOutput, NodeError> {
    tokio::time::timeout(
        EXEC_DEADLINE,
        run_collected(pods, pod, container, argv, stdin),
    )
    .await
    .unwrap_or_else(|_| {
        Err(NodeError::Unreachable(format!(
            "a command in pod {pod} did not finish within {}s",
            EXEC_DEADLINE.as_secs()
        )))
    })
}

async fn run_collected(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    argv: Vec<String>,
    stdin: Option<SecretBytes>,
) -> Result<ExecOutput, NodeError> {
    let params = attach_params(container, stdin.is_some());
    let mut attached = pods
        .exec(pod, argv, &params)
        .await
        .map_err(|e| kube_error(pod, e))?;
    let status = attached.take_status();
    let writer = attached.stdin();
    let mut out = attached.stdout();
    let mut err = attached.stderr();
    let feed = async move {
        if let (Some(mut w), Some(bytes)) = (writer, stdin) {
            w.write_all(bytes.expose()).await?;
            w.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let read_out = async {
        // Sized for any answer that carries keys, so the buffer never grows
        // (a grown Vec frees its old buffer without zeroizing it).
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Some(r) = out.as_mut() {
            r.take(MAX_OUTPUT + 1).read_to_end(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(r) = err.as_mut() {
            r.take(MAX_OUTPUT + 1).read_to_end(&mut buf).await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let (fed, stdout, stderr) = tokio::join!(feed, read_out, read_err);
    let unreachable =
        |e: std::io::Error| NodeError::Unreachable(format!("exec stream to pod {pod} broke: {e}"));
    fed.map_err(unreachable)?;
    let stdout = stdout.map_err(unreachable)?;
    if stdout.len() as u64 > MAX_OUTPUT {
        return Err(NodeError::Malformed(format!(
            "a command in pod {pod} printed more than {} MiB",
            MAX_OUTPUT / 1024 / 1024
        )));
    }
    let stderr = String::from_utf8_lossy(&stderr.map_err(unreachable)?).into_owned();
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let _ = attached.join().await;
    let status = status.ok_or_else(|| {
        NodeError::Unreachable(format!(
            "the exec stream to pod {pod} closed before the command's exit status arrived"
        ))
    })?;
    Ok(ExecOutput {
        exit_code: exit_code(&status),
        stdout,
        stderr,
    })
}

/// Stdout handed over as a stream: the command runs while the caller reads.
pub type StdoutStream = tokio::io::ReadHalf<tokio::io::SimplexStream>;

/// A command started by [`stream_in`]: read `stdout` to its end, then
/// [`Streaming::wait`] for the exit status.
pub struct Streaming {
    pub stdout: Option<StdoutStream>,
    pod: String,
    attached: kube::api::AttachedProcess,
    status: Option<
        std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
                    > + Send,
            >,
        >,
    >,
    feeder: tokio::task::JoinHandle<std::io::Result<u64>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

/// Bytes a streaming exec sends on stdin: an optional first line (a token)
/// and then a body read to its end, in constant memory.
pub struct StreamStdin<R> {
    pub first_line: Option<SecretBytes>,
    pub body: Option<R>,
}

/// How much of a command's stderr is kept for the error message.
const STDERR_KEEP: usize = 64 * 1024;

/// Runs one command whose stdin and stdout may be larger than memory: stdin
/// is copied from `stdin.body` as the command reads it, stdout is returned as
/// a stream (`stream_stdout`) or discarded. Buffers are bounded (64 KiB in,
/// 256 KiB out), so memory does not grow with the data.
pub async fn stream_in<R>(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    argv: Vec<String>,
    stdin: StreamStdin<R>,
    stream_stdout: bool,
) -> Result<Streaming, NodeError>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    let wants_stdin = stdin.first_line.is_some() || stdin.body.is_some();
    let params = attach_params(container, wants_stdin);
    let mut attached = pods
        .exec(pod, argv, &params)
        .await
        .map_err(|e| kube_error(pod, e))?;
    let status = attached
        .take_status()
        .map(|s| Box::pin(s) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>);
    let writer = attached.stdin();
    let feeder = tokio::spawn(async move {
        let Some(mut w) = writer else { return Ok(0) };
        let mut sent = 0;
        if let Some(line) = stdin.first_line {
            w.write_all(line.expose()).await?;
            w.write_all(b"\n").await?;
        }
        if let Some(mut body) = stdin.body {
            sent = tokio::io::copy(&mut body, &mut w).await?;
        }
        w.shutdown().await?;
        Ok(sent)
    });
    let mut err = attached.stderr();
    let stderr = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 8192];
        if let Some(r) = err.as_mut() {
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEEP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        kept
    });
    let mut stdout = attached.stdout();
    if !stream_stdout {
        if let Some(mut r) = stdout.take() {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
            });
        }
    }
    Ok(Streaming {
        stdout,
        pod: pod.to_owned(),
        attached,
        status,
        feeder,
        stderr,
    })
}

impl Streaming {
    /// Waits for the command to end (after stdout was read to its end);
    /// returns the exit code, the bytes sent on stdin (body only) and stderr.
    pub async fn wait(self) -> Result<(i32, u64, String), NodeError> {
        let pod = self.pod;
        let unreachable =
            |e: String| NodeError::Unreachable(format!("exec stream to pod {pod} broke: {e}"));
        let fed = self.feeder.await.map_err(|e| unreachable(e.to_string()))?;
        let stderr = self.stderr.await.unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        let status = match self.status {
            Some(s) => s.await,
            None => None,
        };
        let _ = self.attached.join().await;
        let status = status.ok_or_else(|| {
            NodeError::Unreachable(format!(
                "the exec stream to pod {pod} closed before the command's exit status arrived"
            ))
        })?;
        let code = exit_code(&status);
        // A command that exits early closes its stdin: report its own words first.
        let sent = match fed {
            Ok(n) => n,
            Err(e) if code == 0 => return Err(unreachable(e.to_string())),
            Err(_) => 0,
        };
        Ok((code, sent, stderr))
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

/// Turns the CLI's output into the response's data, or its error into a [`NodeError`].
pub fn interpret(output: ExecOutput) -> Result<Value, NodeError> {
    if output.exit_code == 0 {
        let text = String::from_utf8_lossy(&output.stdout);
        let text = text.trim();
        if text.is_empty() || !text.starts_with('{') {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| NodeError::Malformed(format!("CLI output is not JSON: {e}")))?;
        return Ok(match value.get("data") {
            Some(data) if !data.is_null() => data.clone(),
            _ => value,
        });
    }
    Err(parse_cli_error(&output.stderr, output.exit_code))
}

/// The CLI's output kept whole in zeroizing memory when it succeeded (an
/// answer that carries secrets), or its error as a [`NodeError`].
pub fn interpret_secret(output: ExecOutput) -> Result<SecretAnswer, NodeError> {
    if output.exit_code == 0 {
        return Ok(SecretAnswer::new(output.stdout));
    }
    Err(parse_cli_error(&output.stderr, output.exit_code))
}

/// Parses `Code: 400. Errors:\n\n* message` as the Vault CLI prints API errors.
pub fn parse_cli_error(stderr: &str, exit_code: i32) -> NodeError {
    if let Some(rest) = stderr.split("Code: ").nth(1) {
        let status: u16 = rest
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        let errors: Vec<String> = rest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("* "))
            .map(str::to_owned)
            .collect();
        return NodeError::Api { status, errors };
    }
    if stderr.contains("No value found at") {
        return NodeError::Api {
            status: 404,
            errors: vec![stderr.trim().to_owned()],
        };
    }
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    NodeError::Unreachable(format!("the CLI exited with {exit_code}: {first}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_api_errors_become_status_and_messages() {
        let stderr = "Error writing data to sys/unseal: Error making API request.\n\nURL: PUT http://127.0.0.1:8200/v1/sys/unseal\nCode: 400. Errors:\n\n* 'key' must be a valid hex or base64 string\n";
        match parse_cli_error(stderr, 2) {
            NodeError::Api { status, errors } => {
                assert_eq!(status, 400);
                assert_eq!(
                    errors,
                    vec!["'key' must be a valid hex or base64 string".to_owned()]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn output_is_unwrapped_from_data() {
        let out = ExecOutput {
            exit_code: 0,
            stdout: br#"{"data":{"sealed":true},"warnings":null}"#.to_vec(),
            stderr: String::new(),
        };
        assert_eq!(interpret(out).unwrap(), serde_json::json!({"sealed": true}));
        let empty = ExecOutput {
            exit_code: 0,
            stdout: b"Success! Data deleted".to_vec(),
            stderr: String::new(),
        };
        assert_eq!(interpret(empty).unwrap(), Value::Null);
    }
}
