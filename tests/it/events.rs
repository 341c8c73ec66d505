//! Every operation that changes a cluster leaves Events on the StatefulSet
//! (issue 15, item 4): started, then succeeded, refused or failed, with no
//! secret in them. Read-only commands leave none.

use crate::harness::Env;
use k8s_openapi::api::core::v1::Event;
use sandbox::ClusterOptions;

/// (reason, type, message) of the Events on the StatefulSet, oldest first.
async fn events(env: &Env) -> Vec<(String, String, String)> {
    let api: kube::Api<Event> = kube::Api::namespaced(env.client().await, env.cluster.namespace());
    let mut items = api
        .list(&Default::default())
        .await
        .expect("list events")
        .items;
    items.retain(|e| e.involved_object.kind.as_deref() == Some("StatefulSet"));
    items.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    });
    items
        .into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.type_.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_operation_that_changes_the_cluster_leaves_events_on_the_statefulset() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
        .await
        .ok();
    env.plugin(&["status"]).await.ok();
    env.plugin(&["rotate", "--yes"]).await.ok();
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to]).await.ok();
    env.plugin(&["snapshot", "list", "--from", &to]).await.ok();
    let missing = dir.path().join("missing.snap");
    let refused = env
        .plugin(&[
            "snapshot",
            "restore",
            "--from",
            missing.to_str().unwrap(),
            "--yes",
        ])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");

    let seen = events(&env).await;
    let reasons: Vec<&str> = seen.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "InitStarted",
            "InitSucceeded",
            "RotateStarted",
            "RotateSucceeded",
            "SnapshotSaveStarted",
            "SnapshotSaveSucceeded",
            "SnapshotRestoreStarted",
            "SnapshotRestoreRefused",
        ],
        "{seen:#?}"
    );
    let (_, kind, message) = seen.last().unwrap();
    assert_eq!(kind, "Warning");
    assert!(
        message.starts_with("kubectl vault snapshot restore refused: ")
            && message.contains("missing.snap"),
        "{message}"
    );
    assert!(
        seen[0]
            .2
            .contains("kubectl vault init started (kubectl-vault@"),
        "{seen:#?}"
    );
    env.assert_no_secret_exposed().await;
}
