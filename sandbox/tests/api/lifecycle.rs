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
