//! What a restore-test must leave as it was, read from the live cluster,
//! and how a test edits the stored credentials the way a person would.

use crate::harness::Env;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use std::time::Duration;

/// What must not change: every pod's uid and restarts, seal state, the
/// raft peer set, a KV value, and the entries of each data folder.
#[derive(Debug, PartialEq)]
pub(crate) struct Live {
    pods: Vec<(String, String, i32)>,
    sealed: Vec<bool>,
    peers: Vec<(String, String, bool)>,
    sentinel: String,
    data: Vec<Vec<String>>,
}

pub(crate) async fn live(env: &Env, token: &str) -> Live {
    let api: Api<Pod> = Api::namespaced(env.client().await, env.cluster.namespace());
    let mut pods: Vec<(String, String, i32)> = api
        .list(&Default::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|c| c.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            (
                p.metadata.name.unwrap_or_default(),
                p.metadata.uid.unwrap_or_default(),
                restarts,
            )
        })
        .collect();
    pods.sort();
    let mut sealed = Vec::new();
    for i in 0..env.cluster.pod_names().len() as u32 {
        sealed.push(env.seal_status(i).await["sealed"] == true);
    }
    let leader = env.active_ordinal().await;
    let (code, out) = env
        .bao(
            leader,
            Some(token),
            &["read", "-format=json", "sys/storage/raft/configuration"],
            None,
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("raft config");
    let mut peers: Vec<(String, String, bool)> = v["data"]["config"]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["node_id"].as_str().unwrap_or_default().to_owned(),
                s["address"].as_str().unwrap_or_default().to_owned(),
                s["voter"] == true,
            )
        })
        .collect();
    peers.sort();
    let data = env
        .cluster
        .pod_names()
        .iter()
        .map(|pod| {
            let mut names: Vec<String> =
                std::fs::read_dir(env.cluster.dir().join("pods").join(pod).join("data"))
                    .expect("data folder")
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
            names.sort();
            names
        })
        .collect();
    Live {
        pods,
        sealed,
        peers,
        sentinel: env.read_kv(token, "sentinel").await,
        data,
    }
}

/// Waits until autopilot made every peer a voter, so that the live state
/// compared before and after is a settled one.
pub(crate) async fn wait_for_voters(env: &Env, token: &str) {
    for _ in 0..120 {
        if live(env, token).await.peers.iter().all(|p| p.2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the raft peers never all became voters");
}

/// Replaces the stored credentials document with `doc`, as a person
/// editing the Secret by hand would.
pub(crate) async fn replace_credentials(env: &Env, doc: &serde_json::Value) {
    let api: Api<Secret> = Api::namespaced(env.client().await, env.cluster.namespace());
    let mut secret = api
        .get(&env.secret_name())
        .await
        .expect("credentials Secret");
    secret.data.as_mut().expect("data").insert(
        "credentials.json".into(),
        k8s_openapi::ByteString(serde_json::to_vec(doc).unwrap()),
    );
    api.replace(&env.secret_name(), &PostParams::default(), &secret)
        .await
        .expect("replace credentials");
}
