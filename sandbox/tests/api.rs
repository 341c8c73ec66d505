//! Integration tests: real kube-rs and real kubectl against sandbox clusters
//! whose pods are real OpenBao servers. Each test starts its own cluster.

#[path = "api/cli.rs"]
mod cli;
#[path = "api/faults.rs"]
mod faults;
#[path = "api/harness.rs"]
mod harness;
#[path = "api/kubectl.rs"]
mod kubectl;
#[path = "api/lifecycle.rs"]
mod lifecycle;
#[path = "api/objects.rs"]
mod objects;
#[path = "api/streams.rs"]
mod streams;

use std::time::Duration;

use harness::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use sandbox::{Cluster, ClusterOptions};

#[tokio::test]
async fn discovery_lists_core_and_group_resources() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let d = kube::Discovery::new(c.client().await.unwrap())
        .run()
        .await
        .unwrap();
    let mut found = Vec::new();
    for g in d.groups() {
        for (ar, caps) in g.recommended_resources() {
            found.push(format!(
                "{}/{}:{}",
                ar.group,
                ar.plural,
                caps.scope == kube::discovery::Scope::Namespaced
            ));
        }
    }
    for want in [
        "/pods:true",
        "/secrets:true",
        "/services:true",
        "/namespaces:false",
        "apps/statefulsets:true",
        "coordination.k8s.io/leases:true",
        "events.k8s.io/events:true",
    ] {
        assert!(
            found.iter().any(|f| f == want),
            "{want} missing from {found:?}"
        );
    }
    assert!(
        !found.iter().any(|f| f.starts_with("metrics.k8s.io")),
        "metrics.k8s.io is listed only with metrics_server: {found:?}"
    );
    let v = c.client().await.unwrap().apiserver_version().await.unwrap();
    assert_eq!(v.minor, "37");
}

#[tokio::test]
async fn pods_list_with_equality_and_set_selectors() {
    let c = Cluster::start(ClusterOptions::vault().replicas(2))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let names = |sel: &'static str| {
        let pods = pods.clone();
        async move {
            let l = pods.list(&ListParams::default().labels(sel)).await.unwrap();
            l.items
                .into_iter()
                .map(|p| p.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("app.kubernetes.io/name=vault").await,
        ["vault-0", "vault-1"]
    );
    assert_eq!(
        names("app.kubernetes.io/name==vault,component=server")
            .await
            .len(),
        2
    );
    assert!(names("app.kubernetes.io/name=openbao").await.is_empty());
    assert_eq!(names("apps.kubernetes.io/pod-index!=0").await, ["vault-1"]);
    assert_eq!(
        names("statefulset.kubernetes.io/pod-name in (vault-1, x)").await,
        ["vault-1"]
    );
    assert_eq!(
        names("statefulset.kubernetes.io/pod-name notin (vault-1)").await,
        ["vault-0"]
    );
    assert_eq!(names("component,!missing").await.len(), 2);
    assert!(names("missing").await.is_empty());
    let by_field = pods
        .list(&ListParams::default().fields("metadata.name=vault-1"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    assert_eq!(c.pod_names(), ["vault-0", "vault-1"]);
}

#[tokio::test]
async fn pod_becomes_ready_after_init_and_unseal() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let client = c.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), c.namespace());
    let p = pods.get("openbao-0").await.unwrap();
    assert!(!pod_ready(&p));
    let status = p.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(
        format!("http://{}:8200", status.pod_ip.unwrap()),
        c.pod_api_addr(0)
    );
    let labels = p.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/name"], "openbao");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    assert_eq!(p.metadata.owner_references.unwrap()[0].kind, "StatefulSet");
    let spec = p.spec.unwrap();
    assert_eq!(spec.containers[0].name, "openbao");
    let ports: Vec<i32> = spec.containers[0]
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [8200, 8201]);

    let (key, _root) = init(&pods, "openbao-0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !pod_ready(&pods.get("openbao-0").await.unwrap()),
        "initialized but sealed must not be Ready"
    );
    unseal(&pods, "openbao-0", &key).await.unwrap();
    wait_until(Duration::from_secs(20), "Ready", || async {
        pod_ready(&pods.get("openbao-0").await.unwrap())
    })
    .await
    .unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(client, c.namespace());
    let s = sts.get("openbao").await.unwrap().status.unwrap();
    assert_eq!(s.ready_replicas, Some(1));
}

#[tokio::test]
async fn statefulset_reports_spec_and_status() {
    let c = Cluster::start(ClusterOptions::vault().replicas(2).name("vlt"))
        .await
        .unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let s = sts.get("vlt").await.unwrap();
    let spec = s.spec;
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("vlt-internal"));
    assert_eq!(
        spec.selector.match_labels.unwrap()["app.kubernetes.io/name"],
        "vault"
    );
    let st = s.status.unwrap();
    assert_eq!(
        (
            st.replicas,
            st.ready_replicas.unwrap_or(0),
            st.current_replicas
        ),
        (2, 0, Some(2))
    );
    assert_eq!(
        sts.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let missing = sts.get("nope").await.unwrap_err();
    assert!(
        matches!(missing, kube::Error::Api(ref s) if s.code == 404),
        "{missing:?}"
    );
}

#[tokio::test]
async fn https_cluster_serves_kube_rs_with_the_generated_ca() {
    let c = Cluster::start(one_pod().tls(true)).await.unwrap();
    assert!(c.server_url().starts_with("https://"));
    let kc = std::fs::read_to_string(c.kubeconfig_path()).unwrap();
    assert!(kc.contains("certificate-authority-data"));
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let out = exec(
        &pods,
        "openbao-0",
        None,
        &["sh", "-c", "echo $BAO_ADDR; bao status -format=json; true"],
        None,
    )
    .await
    .unwrap();
    // The charts' address, served by the pod's own loopback (as root), and
    // the CLI reaches its server through it.
    let (addr, status) = out.stdout.split_once('\n').unwrap();
    let expected = if sandbox::running_as_root() {
        "http://127.0.0.1:8200".to_owned()
    } else {
        c.pod_api_addr(0)
    };
    assert_eq!(addr, expected);
    let status: serde_json::Value = serde_json::from_str(status).unwrap();
    assert_eq!(status["initialized"], false, "{status}");

    // Without the bearer token the server answers 401 over TLS.
    let kcfg = kube::config::Kubeconfig::read_from(c.kubeconfig_path()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kcfg, &Default::default())
        .await
        .unwrap();
    cfg.auth_info = Default::default();
    let anon: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), c.namespace());
    let err = anon.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err:?}"
    );
}

#[tokio::test]
async fn drop_kills_every_server_process() {
    let c = Cluster::start(ClusterOptions::vault().replicas(2))
        .await
        .unwrap();
    let pids = c.server_pids();
    assert_eq!(pids.len(), 2);
    let dir = c.dir().to_path_buf();
    assert!(dir.join("pods/vault-0/data").is_dir());
    drop(c);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "bao {pid} survived the drop"
        );
    }
    assert!(!dir.exists(), "temp dir kept");
}
