//! Pod lifecycle: restart (sealed, restartCount+1), wipe (uninitialized),
//! OrderedReady creation, remove and scale.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use sandbox::{Cluster, ClusterOptions};

use crate::harness::*;

#[tokio::test]
async fn restart_pod_comes_back_sealed_with_restart_count() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let (key, _) = init(&pods, "openbao-0").await.unwrap();
    unseal(&pods, "openbao-0", &key).await.unwrap();
    wait_until(Duration::from_secs(20), "Ready", || async {
        pod_ready(&pods.get("openbao-0").await.unwrap())
    })
    .await
    .unwrap();
    let before = pods.get("openbao-0").await.unwrap();
    let old_pid = c.server_pids()[0];
    let addr = c.pod_api_addr(0);

    c.restart_pod(0).await.unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{old_pid}")).exists()
            || c.server_pids()[0] != old_pid
    );
    let after = pods.get("openbao-0").await.unwrap();
    assert_eq!(restart_count(&after), restart_count(&before) + 1);
    assert_eq!(
        after.metadata.uid, before.metadata.uid,
        "a container restart keeps the pod"
    );
    assert!(!pod_ready(&after));
    assert_eq!(c.pod_api_addr(0), addr, "the IP survives restarts");
    let st = seal_status(&pods, "openbao-0").await.unwrap();
    assert_eq!(
        (st["initialized"].as_bool(), st["sealed"].as_bool()),
        (Some(true), Some(true))
    );
    unseal(&pods, "openbao-0", &key).await.unwrap();
    wait_until(Duration::from_secs(20), "Ready again", || async {
        pod_ready(&pods.get("openbao-0").await.unwrap())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wipe_pod_comes_back_uninitialized() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    init(&pods, "openbao-0").await.unwrap();
    assert_eq!(
        seal_status(&pods, "openbao-0").await.unwrap()["initialized"],
        true
    );
    let uid = pods.get("openbao-0").await.unwrap().metadata.uid;
    c.wipe_pod(0).await.unwrap();
    assert_eq!(
        seal_status(&pods, "openbao-0").await.unwrap()["initialized"],
        false
    );
    assert_ne!(
        pods.get("openbao-0").await.unwrap().metadata.uid,
        uid,
        "PVC and pod are new"
    );
}

#[tokio::test]
async fn ordered_ready_creates_pod_1_only_after_pod_0_is_ready() {
    let c = Cluster::start(ClusterOptions::openbao().replicas(2))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    assert_eq!(c.pod_names(), ["openbao-0"]);
    let (key, _) = init(&pods, "openbao-0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "sealed pod 0 blocks pod 1"
    );
    unseal(&pods, "openbao-0", &key).await.unwrap();
    wait_until(Duration::from_secs(20), "openbao-1 created", || async {
        c.pod_names().len() == 2
    })
    .await
    .unwrap();
    c.wait_for_pods(2, Duration::from_secs(20)).await.unwrap();
    assert!(pod_ready(&pods.get("openbao-0").await.unwrap()));
    // The new pod is a fresh, uninitialized server on its own IP.
    assert_eq!(
        seal_status(&pods, "openbao-1").await.unwrap()["initialized"],
        false
    );
    assert_ne!(c.pod_api_addr(0), c.pod_api_addr(1));
}

#[tokio::test]
async fn remove_and_scale_keep_data_and_ips() {
    let c = Cluster::start(ClusterOptions::vault().replicas(2))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let ip1 = c.pod_api_addr(1);
    init(&pods, "vault-1").await.unwrap();
    c.remove_pod(1).await.unwrap();
    assert_eq!(c.pod_names(), ["vault-0"]);
    assert!(matches!(pods.get("vault-1").await, Err(kube::Error::Api(ref s)) if s.code == 404));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.pod_names(), ["vault-0"], "a removed pod stays away");
    c.scale(2).await.unwrap();
    assert_eq!(c.pod_names(), ["vault-0", "vault-1"]);
    assert_eq!(c.pod_api_addr(1), ip1);
    assert_eq!(
        seal_status(&pods, "vault-1").await.unwrap()["initialized"],
        true,
        "data survives"
    );
    c.scale(1).await.unwrap();
    assert_eq!(c.pod_names(), ["vault-0"]);
}

#[tokio::test]
async fn retry_join_lets_the_second_pod_join_and_become_standby() {
    // Node ids named after the pods (setNodeId), to see vault-1 in the peer set.
    let c = Cluster::start(
        ClusterOptions::vault()
            .replicas(2)
            .retry_join(true)
            .set_node_id(true),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let (key, root) = init(&pods, "vault-0").await.unwrap();
    unseal(&pods, "vault-0", &key).await.unwrap();
    wait_until(Duration::from_secs(30), "vault-0 Ready", || async {
        pod_ready(&pods.get("vault-0").await.unwrap())
    })
    .await
    .unwrap();
    // vault-1 joins through retry_join on its own; then it takes the leader's share.
    wait_until(Duration::from_secs(40), "vault-1 unsealed", || async {
        unseal(&pods, "vault-1", &key).await.is_ok()
    })
    .await
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "vault-1 Ready (standby)",
        || async { pod_ready(&pods.get("vault-1").await.unwrap()) },
    )
    .await
    .unwrap();
    let script = "IFS= read -r VAULT_TOKEN; export VAULT_TOKEN; exec vault read -format=json sys/storage/raft/configuration";
    let out = exec(
        &pods,
        "vault-0",
        None,
        &["sh", "-c", script],
        Some(&format!("{root}\n")),
    )
    .await
    .unwrap();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let servers = v["data"]["config"]["servers"].as_array().unwrap();
    let ids: Vec<&str> = servers
        .iter()
        .map(|s| s["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"vault-1"));
}

#[tokio::test]
async fn a_crashed_server_is_restarted_like_the_kubelet_would() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let pid = c.server_pids()[0];
    // SAFETY: signalling a process this test's cluster started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(20), "restartCount 1", || async {
        restart_count(&pods.get("openbao-0").await.unwrap()) == 1
    })
    .await
    .unwrap();
    c.wait_for_pods(1, Duration::from_secs(20)).await.unwrap();
    assert_ne!(c.server_pids(), [pid]);
    assert_eq!(
        seal_status(&pods, "openbao-0").await.unwrap()["sealed"],
        true
    );
}

#[tokio::test]
async fn deleting_a_pod_recreates_it_with_its_data() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    init(&pods, "openbao-0").await.unwrap();
    let before = pods.get("openbao-0").await.unwrap();
    pods.delete("openbao-0", &Default::default()).await.unwrap();
    // Terminating while the charts' preStop hook sleeps, then replaced.
    let terminating = pods.get("openbao-0").await.unwrap();
    assert_eq!(terminating.metadata.uid, before.metadata.uid);
    assert!(terminating.metadata.deletion_timestamp.is_some());
    wait_until(Duration::from_secs(60), "a successor that runs", || async {
        pods.get_opt("openbao-0").await.unwrap().is_some_and(|p| {
            p.metadata.uid != before.metadata.uid
                && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
        })
    })
    .await
    .unwrap();
    c.wait_for_pods(1, Duration::from_secs(30)).await.unwrap();
    let after = pods.get("openbao-0").await.unwrap();
    assert_ne!(after.metadata.uid, before.metadata.uid);
    assert_eq!(restart_count(&after), 0);
    assert_eq!(
        seal_status(&pods, "openbao-0").await.unwrap()["initialized"],
        true,
        "the PVC survives"
    );
}

#[tokio::test]
async fn statefulset_scale_subresource_adds_pods() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use kube::api::{Patch, PatchParams};
    let c = Cluster::start(ClusterOptions::vault().replicas(1))
        .await
        .unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    assert_eq!(
        sts.get_scale("vault").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
    let scaled = sts
        .patch_scale(
            "vault",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(2));
    c.wait_for_pods(2, Duration::from_secs(20)).await.unwrap();
    assert_eq!(c.pod_names(), ["vault-0", "vault-1"]);
    assert_eq!(sts.get("vault").await.unwrap().spec.replicas, Some(2));
}

#[tokio::test]
async fn a_missing_bao_binary_is_a_clear_error() {
    let err = Cluster::start(one_pod().bin_dir("/nonexistent"))
        .await
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("/nonexistent/bao") && msg.contains("install-deps"),
        "{msg}"
    );
}
