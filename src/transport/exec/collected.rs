//! A collected exec: one short command whose output and exit code come
//! back whole, within a deadline and a size limit. Every Vault API call
//! goes this way.

use super::{attach_params, exit_code, kube_error, ExecOutput};
use crate::ops::node::NodeError;
use crate::ops::secret::SecretBytes;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one collected exec may take: every Vault API call is short.
/// Snapshots stream through [`stream_in`](super::stream_in), which has its own deadline.
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
