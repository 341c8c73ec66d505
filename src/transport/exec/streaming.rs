//! A streaming exec: stdin and stdout larger than memory (a snapshot),
//! stdout handed over as a stream while the command runs, the exit status
//! and the kept stderr read at the end.

use super::{attach_params, exit_code, kube_error};
use crate::ops::node::NodeError;
use crate::ops::secret::SecretBytes;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
