//! The risk table's guards before the copy: raft values applied with no
//! migrate (raft pods come up empty while the file data sits on pod 0's
//! volume), and an image upgraded to one that refuses file storage. Each
//! is recognised, refused with the way back, and changes nothing.

use super::{must, standalone_with_data};
use sandbox::{ClusterOptions, Reconfigure, Storage};

/// The raft values applied with no migrate: raft pods come up empty while
/// the file data sits on pod 0's volume. Detected, init refused, way back said.
#[tokio::test]
async fn migrate_refuses_raft_values_applied_before_the_copy_and_names_the_way_back() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao().parallel()).await;
    env.write_kv(&token, "probe", "kept").await;
    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());
    let run = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await;
    must(&run, 1);
    assert!(
        run.stderr.contains("applied without a migrate"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("re-apply the standalone values"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Do not run `kubectl vault init`"),
        "{}",
        run.stderr
    );
    let init = env.plugin(&["init", "--yes", "--timeout", "20s"]).await;
    must(&init, 1);
    assert_eq!(
        env.seal_status(0).await["initialized"],
        false,
        "nothing initialized"
    );
    assert_eq!(env.sys_inits(), 1);
    assert!(!env.checkpoint_exists().await);

    // The way back works: standalone values again, the data is there.
    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::File),
            replicas: Some(1),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    must(&env.plugin(&["unseal", "--timeout", "30s"]).await, 0);
    assert_eq!(env.read_kv(&token, "probe").await, "kept");
    env.assert_no_secret_exposed().await;
}

/// The image upgraded to 2.7 before the migrate: the pod crash-loops on
/// `unknown storage type file`. `status` and `migrate` say to pin the image
/// back to 2.6.x; once it is, the data is all there.
#[tokio::test]
async fn an_upgraded_image_refusing_file_storage_is_recognised_and_pinning_back_keeps_the_data() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao()).await;
    env.write_kv(&token, "probe", "intact").await;
    env.cluster
        .reconfigure(Reconfigure {
            version: Some("2.7.2".into()),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let log = env.cluster.dir().join("pods/openbao-0/server.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("unknown storage type file"),
        "the 2.7 server refused file storage"
    );
    let status = env.plugin(&["status", "-o", "json"]).await.json();
    let next = status["next"].as_str().unwrap_or_default().to_owned();
    assert!(next.contains("Pin the image back to 2.6.x"), "{status}");
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());
    let run = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await;
    must(&run, 1);
    assert!(
        run.stderr.contains("Pin the image back to 2.6.x"),
        "{}",
        run.stderr
    );
    assert!(!env.checkpoint_exists().await);

    env.cluster
        .reconfigure(Reconfigure {
            version: Some("2.6.2".into()),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    must(&env.plugin(&["unseal", "--timeout", "30s"]).await, 0);
    assert_eq!(env.read_kv(&token, "probe").await, "intact");
    env.assert_no_secret_exposed().await;
}
