//! Shared helpers: exec through kube-rs, bao init/unseal, polling with deadlines, kubectl.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use sandbox::{Cluster, ClusterOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One OpenBao pod, Parallel: the cheapest cluster.
pub fn one_pod() -> ClusterOptions {
    ClusterOptions::openbao().replicas(1).parallel()
}

pub struct ExecOut {
    pub stdout: String,
    pub stderr: String,
    pub status: Option<Status>,
}

impl ExecOut {
    /// 0 for Success, the ExitCode cause otherwise, None without a status.
    pub fn code(&self) -> Option<i32> {
        let s = self.status.as_ref()?;
        if s.status.as_deref() == Some("Success") {
            return Some(0);
        }
        let causes = s.details.as_ref()?.causes.as_ref()?;
        causes
            .iter()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))?
            .message
            .as_ref()?
            .parse()
            .ok()
    }
}

pub async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: Option<&str>,
    argv: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<ExecOut> {
    let mut ap = AttachParams::default()
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true);
    if let Some(c) = container {
        ap = ap.container(c);
    }
    let mut proc = pods
        .exec(
            pod,
            argv.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &ap,
        )
        .await?;
    if let (Some(input), Some(mut w)) = (stdin, proc.stdin()) {
        w.write_all(input.as_bytes()).await?;
        w.shutdown().await?;
        drop(w);
    }
    let mut out = proc.stdout().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut err = proc.stderr().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let status = proc
        .take_status()
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    let (mut o, mut e) = (String::new(), String::new());
    let (r1, r2) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(out.read_to_string(&mut o), err.read_to_string(&mut e))
    })
    .await?;
    r1?;
    r2?;
    let status = tokio::time::timeout(Duration::from_secs(30), status).await?;
    let _ = proc.join().await;
    Ok(ExecOut {
        stdout: o,
        stderr: e,
        status,
    })
}

/// The CLI in the main container: `vault` for the Vault flavour, else `bao`.
pub fn cli(pod: &str) -> &'static str {
    if pod.starts_with("vault") {
        "vault"
    } else {
        "bao"
    }
}

/// `bao write -format=json sys/init -` with one share; returns (unseal key, root token).
pub async fn init(pods: &Api<Pod>, pod: &str) -> anyhow::Result<(String, String)> {
    let out = exec(
        pods,
        pod,
        None,
        &[cli(pod), "write", "-format=json", "sys/init", "-"],
        Some(r#"{"secret_shares":1,"secret_threshold":1}"#),
    )
    .await?;
    anyhow::ensure!(
        out.code() == Some(0),
        "init failed: {} {}",
        out.stdout,
        out.stderr
    );
    let v: Value = serde_json::from_str(&out.stdout)?;
    let key = v["data"]["keys_base64"][0]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no key in {v}"))?;
    let root = v["data"]["root_token"].as_str().unwrap_or_default();
    Ok((key.to_string(), root.to_string()))
}

/// Unseals `pod` with `key` read from stdin (never on the command line).
pub async fn unseal(pods: &Api<Pod>, pod: &str, key: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "key": key }).to_string();
    let out = exec(
        pods,
        pod,
        None,
        &[cli(pod), "write", "-format=json", "sys/unseal", "-"],
        Some(&body),
    )
    .await?;
    anyhow::ensure!(
        out.code() == Some(0),
        "unseal failed: {} {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// `bao status -format=json` parsed (exit code 2 when sealed is fine).
pub async fn seal_status(pods: &Api<Pod>, pod: &str) -> anyhow::Result<Value> {
    let out = exec(pods, pod, None, &[cli(pod), "status", "-format=json"], None).await?;
    Ok(serde_json::from_str(&out.stdout)?)
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

pub fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(-1, |c| c[0].restart_count)
}

/// Real kubectl with the cluster's kubeconfig and a throwaway HOME.
pub fn kubectl(cluster: &Cluster, home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/../.deps/bin/kubectl");
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        w.write_all(input.as_bytes()).expect("write kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
