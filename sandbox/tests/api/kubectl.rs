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
