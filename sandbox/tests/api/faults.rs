//! Injected faults: failing Secret writes (500, 409, dropped connection),
//! dropped exec streams, latency, and 403 from forbid().

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use sandbox::{Cluster, SecretFault};
use serde_json::json;

use crate::harness::*;

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn secret_write_faults_fail_the_next_writes_then_clear() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let pp = PostParams::default();

    c.fail_secret_writes("a", 1, SecretFault::ServerError);
    let e = secrets.create(&pp, &secret("a")).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 500 && s.reason == "InternalError"),
        "{e:?}"
    );
    secrets.create(&pp, &secret("a")).await.unwrap();

    c.fail_secret_writes("a", 2, SecretFault::Conflict);
    let cur = secrets.get("a").await.unwrap();
    for _ in 0..2 {
        let e = secrets.replace("a", &pp, &cur).await.unwrap_err();
        assert!(
            matches!(e, kube::Error::Api(ref s) if s.code == 409),
            "{e:?}"
        );
    }
    secrets.replace("a", &pp, &cur).await.unwrap();

    c.fail_secret_writes("b", 1, SecretFault::DropConnection);
    let e = secrets.create(&pp, &secret("b")).await.unwrap_err();
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "a dropped connection has no status: {e:?}"
    );
    assert!(
        matches!(secrets.get("b").await, Err(kube::Error::Api(ref s)) if s.code == 404),
        "the dropped write must not be applied"
    );
    secrets.create(&pp, &secret("b")).await.unwrap();
    // Reads and other secrets are unaffected.
    c.fail_secret_writes("a", 1, SecretFault::ServerError);
    secrets.get("a").await.unwrap();
    secrets.create(&pp, &secret("c")).await.unwrap();
}

#[tokio::test]
async fn dropped_exec_stream_has_no_status() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    c.drop_exec_streams(1);
    let out = exec(
        &pods,
        "openbao-0",
        None,
        &["sh", "-c", "echo ran > \"$HOME/ran.txt\""],
        None,
    )
    .await
    .unwrap();
    assert!(
        out.status.is_none(),
        "status must not arrive: {:?}",
        out.status
    );
    assert!(
        c.dir().join("pods/openbao-0/home/ran.txt").exists(),
        "the command itself ran"
    );
    let out = exec(&pods, "openbao-0", None, &["true"], None)
        .await
        .unwrap();
    assert_eq!(out.code(), Some(0));
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    pods.list(&ListParams::default()).await.unwrap();
    c.set_latency(Duration::from_millis(1500));
    let t = Instant::now();
    pods.get("openbao-0").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    c.set_latency(Duration::ZERO);
    let t = Instant::now();
    pods.get("openbao-0").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn forbid_answers_403_like_rbac() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let client = c.client().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), c.namespace());
    let pods: Api<Pod> = Api::namespaced(client, c.namespace());
    secrets
        .create(&PostParams::default(), &secret("x"))
        .await
        .unwrap();
    c.forbid("get", "secrets");
    c.forbid("create", "pods/exec");
    match secrets.get("x").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(s.message, "secrets \"x\" is forbidden: User \"sandbox-admin\" cannot get resource \"secrets\" in API group \"\" in the namespace \"vault\"");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert_eq!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "list is still allowed"
    );
    let e = exec(&pods, "openbao-0", None, &["true"], None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(e.downcast::<kube::Error>().unwrap(), kube::Error::Api(ref s) if s.code == 403 && s.message.contains("pods/exec"))
    );
    c.allow_all();
    secrets.get("x").await.unwrap();
    assert_eq!(
        exec(&pods, "openbao-0", None, &["true"], None)
            .await
            .unwrap()
            .code(),
        Some(0)
    );
}
