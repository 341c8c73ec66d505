//! Pod CPU and memory of a member from `metrics.k8s.io`, when its cluster
//! serves it (metrics-server installed).
//!
//! Owns the request, the wire types and Kubernetes quantities; hands
//! `ops::dr` plain numbers ([`PodUsage`]). A cluster without the API, or
//! one that does not answer in time, has no usage: never an error, since
//! usage is reported and not scored.

use crate::ops::dr::score::PodUsage;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
struct PodMetricsList {
    items: Vec<PodMetrics>,
}

#[derive(Debug, Deserialize)]
struct PodMetrics {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    containers: Vec<ContainerMetrics>,
}

#[derive(Debug, Deserialize)]
struct ContainerMetrics {
    usage: ContainerUsage,
}

#[derive(Debug, Deserialize)]
struct ContainerUsage {
    cpu: String,
    memory: String,
}

/// The summed usage of `pods` in `namespace`: `None` when the cluster does
/// not serve `metrics.k8s.io/v1beta1`, does not answer within `timeout`,
/// or reports none of these pods.
pub async fn of_pods(
    client: &kube::Client,
    namespace: &str,
    pods: &[String],
    timeout: Duration,
) -> Option<PodUsage> {
    let request = hyper::http::Request::get(format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
    ))
    .body(Vec::new())
    .ok()?;
    let list: PodMetricsList = match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            tracing::debug!(namespace, error = %e, "no pod metrics (metrics.k8s.io not served?)");
            return None;
        }
        Err(_) => {
            tracing::debug!(namespace, "metrics.k8s.io did not answer in time");
            return None;
        }
    };
    let mut found = Vec::new();
    for m in list.items {
        if !m.metadata.name.as_ref().is_some_and(|n| pods.contains(n)) {
            continue;
        }
        let mut cpu = 0.0;
        let mut memory = 0;
        for c in &m.containers {
            cpu += cpu_millicores(&c.usage.cpu)?;
            memory += memory_bytes(&c.usage.memory)?;
        }
        found.push((cpu, memory));
    }
    PodUsage::sum(found)
}

/// Splits a quantity into its number and suffix (`250m` → 250, `m`).
fn split(q: &str) -> Option<(f64, &str)> {
    let q = q.trim();
    let at = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(at);
    Some((number.parse().ok()?, suffix))
}

/// A CPU quantity (`12345n`, `250m`, `1`, `500u`) in millicores.
pub fn cpu_millicores(q: &str) -> Option<f64> {
    let (n, suffix) = split(q)?;
    match suffix {
        "n" => Some(n / 1e6),
        "u" => Some(n / 1e3),
        "m" => Some(n),
        "" => Some(n * 1e3),
        "k" => Some(n * 1e6),
        _ => None,
    }
}

/// A memory quantity (`123456Ki`, `73Mi`, `1G`, `4096`) in bytes.
pub fn memory_bytes(q: &str) -> Option<u64> {
    let (n, suffix) = split(q)?;
    let scale: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "m" => 1e-3,
        _ => return None,
    };
    let bytes = (n * scale).ceil();
    (bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_read_as_millicores() {
        assert_eq!(cpu_millicores("19704433n"), Some(19.704433));
        assert_eq!(cpu_millicores("250m"), Some(250.0));
        assert_eq!(cpu_millicores("2"), Some(2000.0));
        assert_eq!(cpu_millicores("0.5"), Some(500.0));
        assert_eq!(cpu_millicores("500u"), Some(0.5));
        assert_eq!(cpu_millicores("5x"), None);
        assert_eq!(cpu_millicores(""), None);
    }

    #[test]
    fn memory_quantities_read_as_bytes() {
        assert_eq!(memory_bytes("75164Ki"), Some(75_164 * 1024));
        assert_eq!(memory_bytes("73Mi"), Some(73 * 1024 * 1024));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("4096"), Some(4096));
        assert_eq!(memory_bytes("12Zi"), None);
    }
}
