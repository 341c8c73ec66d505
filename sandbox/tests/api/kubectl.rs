//! Real kubectl 1.37 against HTTP and HTTPS sandboxes.

use sandbox::{Cluster, ClusterOptions};
use serde_json::Value;

use crate::harness::*;

const SECRET_V1: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  key: one\n";
const SECRET_V2: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  key: two\n  extra: x\n";

fn kubectl_flow(c: &Cluster) {
    let home = tempfile::tempdir().unwrap();
    let k = |args: &[&str], stdin: Option<&str>| kubectl(c, home.path(), args, stdin);

    let out = k(
        &["get", "pods", "-l", "app.kubernetes.io/name=openbao"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("READY") && table.contains("RESTARTS"),
        "{table}"
    );
    assert!(table.contains("openbao-0   0/1     Running   0"), "{table}");

    let out = k(
        &[
            "exec",
            "-i",
            "openbao-0",
            "--",
            "bao",
            "status",
            "-format=json",
        ],
        Some(""),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "sealed → exit 2: {}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sealed"], true);
    let out = k(
        &["exec", "-i", "openbao-0", "--", "sh", "-c", "cat; exit 5"],
        Some("piped"),
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(5), "piped")
    );

    let out = k(&["logs", "openbao-0", "--tail", "2"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stdout)
    );
    let out = k(&["get", "all"], None);
    assert!(
        text(&out.stdout).contains("statefulset.apps/openbao"),
        "{}",
        text(&out.stdout)
    );
    let out = k(&["describe", "pod", "openbao-0"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ClaimName:   data-openbao-0"));

    // `create secret generic` sends protobuf.
    let out = k(
        &["create", "secret", "generic", "gen", "--from-literal=a=b"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = k(&["get", "secret", "gen", "-o", "jsonpath={.data.a}"], None);
    assert_eq!(text(&out.stdout), "Yg==");

    // kubectl wait watches the pod: sealed never becomes Ready.
    let out = k(
        &[
            "wait",
            "--for=condition=Ready",
            "pod/openbao-0",
            "--timeout=1s",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );

    let out = k(
        &["create", "-f", "-", "--validate=false"],
        Some("apiVersion: v1\nkind: Secret\nmetadata:\n  name: created\ndata:\n  a: YQ==\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = k(
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        Some(SECRET_V1),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("serverside-applied"));
    let out = k(
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        Some(SECRET_V2),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = k(&["get", "secret", "creds", "-o", "yaml"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let y: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(y["data"]["key"].as_str(), Some("dHdv"));
    assert_eq!(y["data"]["extra"].as_str(), Some("eA=="));
    assert_eq!(y["type"].as_str(), Some("Opaque"));
    let out = k(&["get", "secrets"], None);
    let t = text(&out.stdout);
    assert!(
        t.contains("TYPE") && t.contains("created   Opaque   1"),
        "{t}"
    );
    let out = k(&["get", "secret", "missing"], None);
    assert!(
        text(&out.stderr).contains("secrets \"missing\" not found"),
        "{}",
        text(&out.stderr)
    );
    let out = k(&["delete", "secret", "created"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Without metrics-server the metrics API is neither listed nor served.
    let out = k(&["top", "pods"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Metrics API not available"),
        "{}",
        text(&out.stderr)
    );
}

/// `kubectl top pods` against a sandbox that serves metrics.k8s.io: every
/// running server shows up with its own CPU and resident memory; and an
/// ExternalName Service is created and merge-patched the way `dr failover`
/// prints it.
#[test]
fn kubectl_top_pods_reads_the_servers_processes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt
        .block_on(Cluster::start(
            ClusterOptions::openbao()
                .replicas(2)
                .parallel()
                .metrics_server(true),
        ))
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let k = |args: &[&str], stdin: Option<&str>| kubectl(&c, home.path(), args, stdin);
    let out = k(&["top", "pods", "--no-headers"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for (row, pod) in rows.iter().zip(["openbao-0", "openbao-1"]) {
        assert_eq!(row[0], pod, "{table}");
        let mib: u64 = row[2].trim_end_matches("Mi").parse().expect(&table);
        assert!(mib > 0, "a bao server has resident memory: {table}");
        assert!(row[1].ends_with('m'), "{table}");
    }
    // The figures are each process's own: RSS as /proc reports it.
    let out = k(
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/vault/pods/openbao-0",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["kind"], "PodMetrics");
    assert_eq!(m["containers"][0]["name"], "openbao");
    let memory = m["containers"][0]["usage"]["memory"].as_str().unwrap();
    let kib: u64 = memory.strip_suffix("Ki").unwrap().parse().unwrap();
    let pid = c.server_pids()[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        kib.abs_diff(rss) < rss / 2,
        "reported {kib} KiB, /proc says {rss} KiB"
    );
    assert!(m["containers"][0]["usage"]["cpu"]
        .as_str()
        .unwrap()
        .ends_with('n'));
    assert!(m["window"].as_str().unwrap().ends_with('s'));

    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: vault-clients, namespace: default}\nspec: {type: ExternalName, externalName: old.example.internal}\n";
    let out = k(&["create", "-f", "-", "--validate=false"], Some(svc));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = k(
        &[
            "-n",
            "default",
            "patch",
            "service",
            "vault-clients",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"externalName":"openbao.vault.svc"}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = k(
        &[
            "-n",
            "default",
            "get",
            "service",
            "vault-clients",
            "-o",
            "jsonpath={.spec.externalName}",
        ],
        None,
    );
    assert_eq!(text(&out.stdout), "openbao.vault.svc");
    let out = k(
        &[
            "-n",
            "default",
            "patch",
            "service",
            "vault-clients",
            "-p",
            r#"{"spec":{"externalName":"https://openbao.vault.svc:8200"}}"#,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("spec.externalName"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn kubectl_over_http() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt
        .block_on(Cluster::start(ClusterOptions::openbao().replicas(1)))
        .unwrap();
    kubectl_flow(&c);
}

#[test]
fn kubectl_over_https() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt
        .block_on(Cluster::start(
            ClusterOptions::openbao().replicas(1).tls(true),
        ))
        .unwrap();
    kubectl_flow(&c);
}
