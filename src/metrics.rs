//! Prometheus metrics: a small registry of gauges and counters, rendered in
//! the text exposition format (0.0.4), served on `--metrics-addr` at
//! `/metrics`, or pushed to a Pushgateway.
//!
//! Owns the format (names, HELP/TYPE lines, label escaping) and the
//! endpoint. What is measured, and when, is the commands' business. Names
//! follow Prometheus conventions: the `kubectl_vault_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters. No label ever holds a
//! secret: pods, results and reasons only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

struct Family {
    help: &'static str,
    kind: Kind,
    /// Rendered label sets (`{a="x",b="y"}` or empty) to values.
    samples: BTreeMap<String, f64>,
}

/// The metrics of one process; cheap to clone and share.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

impl Registry {
    fn with_family(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        f: impl FnOnce(&mut BTreeMap<String, f64>),
    ) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            samples: BTreeMap::new(),
        });
        f(&mut family.samples);
    }

    /// Sets a gauge sample.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.with_family(name, help, Kind::Gauge, |s| {
            s.insert(render_labels(labels), v);
        });
    }

    /// Adds 1 to a counter sample (created at 0 first).
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) {
        self.with_family(name, help, Kind::Counter, |s| {
            *s.entry(render_labels(labels)).or_insert(0.0) += 1.0;
        });
    }

    /// Drops every sample of a gauge family (before setting the current
    /// ones, so that a pod that went away leaves no stale series).
    pub fn clear(&self, name: &'static str) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = families.get_mut(name) {
            f.samples.clear();
        }
    }

    /// The text exposition format, families sorted by name.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, f) in families.iter() {
            let kind = match f.kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
            };
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in &f.samples {
                let _ = writeln!(out, "{name}{labels} {}", format_value(*v));
            }
        }
        out
    }
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until the task is dropped; any other
/// path is 404. One request per connection, answered and closed.
pub async fn serve(registry: Registry, listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(addr = %listener.local_addr()?, "serving Prometheus metrics at /metrics");
    loop {
        let (stream, _) = listener.accept().await?;
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &registry).await {
                tracing::debug!(error = %e, "metrics request");
            }
        });
    }
}

async fn answer(mut stream: tokio::net::TcpStream, registry: &Registry) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // The request line and headers; bodies are not read (GET only).
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read(&mut buf[len..]),
        )
        .await
        .map_err(|_| std::io::Error::other("request timed out"))??;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    let (status, ctype, body) = match (method, path.map(|p| p.split('?').next())) {
        (Some("GET"), Some(Some("/metrics"))) => ("200 OK", CONTENT_TYPE, registry.render()),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only /metrics is served\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Sends the metrics of `job` (and `instance`) to a Pushgateway at `url`
/// (`POST /metrics/job/<job>/instance/<instance>`: series of the same
/// names are replaced, others in the group kept).
pub async fn push(url: &str, job: &str, instance: &str, registry: &Registry) -> anyhow::Result<()> {
    let target = format!(
        "{}/metrics/job/{job}/instance/{instance}",
        url.trim_end_matches('/')
    );
    // A gateway that never answers must not hold the CronJob's Job open.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| anyhow::anyhow!("could not build the Pushgateway client: {e}"))?;
    let response = client
        .post(&target)
        .header("Content-Type", CONTENT_TYPE)
        .body(registry.render())
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "could not push metrics to {}: {}",
                without_userinfo(url),
                e.without_url()
            )
        })?;
    if !response.status().is_success() {
        anyhow::bail!(
            "the Pushgateway at {} answered {} to the metrics push",
            without_userinfo(url),
            response.status()
        );
    }
    Ok(())
}

/// `url` for messages: a `user:password@` part (basic auth to the gateway)
/// never reaches a log line.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_credentials_never_reach_a_message() {
        assert_eq!(
            without_userinfo("https://u:s3cret@gw.example:9091/x"),
            "https://gw.example:9091/x"
        );
        assert_eq!(without_userinfo("http://gw:9091"), "http://gw:9091");
        assert_eq!(without_userinfo("http://gw/a@b"), "http://gw/a@b");
    }

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let r = Registry::default();
        r.set(
            "kubectl_vault_pod_sealed",
            "1 when the pod is sealed.",
            &[("pod", "a\"b\\c\nd")],
            1.0,
        );
        r.inc(
            "kubectl_vault_unseal_attempts_total",
            "Unseal attempts.",
            &[("pod", "p"), ("result", "unsealed")],
        );
        r.inc(
            "kubectl_vault_unseal_attempts_total",
            "Unseal attempts.",
            &[("pod", "p"), ("result", "unsealed")],
        );
        r.set("kubectl_vault_ratio", "A ratio.", &[], 0.25);
        let text = r.render();
        assert!(
            text.contains("# TYPE kubectl_vault_pod_sealed gauge\n"),
            "{text}"
        );
        assert!(
            text.contains(r#"kubectl_vault_pod_sealed{pod="a\"b\\c\nd"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("kubectl_vault_unseal_attempts_total{pod=\"p\",result=\"unsealed\"} 2\n")
        );
        assert!(text.contains("kubectl_vault_ratio 0.25\n"));
        r.clear("kubectl_vault_pod_sealed");
        assert!(!r.render().contains("kubectl_vault_pod_sealed{"));
    }
}
