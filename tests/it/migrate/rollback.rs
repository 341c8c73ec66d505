//! `migrate --rollback` before phase 2: refused while the raft values are
//! applied; with the standalone values back, the pod unseals on its
//! untouched file data.

use super::{must, standalone_with_data};
use sandbox::{ClusterOptions, Reconfigure, Storage};

/// `--rollback` before phase 2: refused while the raft values are applied
/// (it says to re-apply the standalone values); with them back, the pod
/// unseals on its untouched file data and the checkpoint goes.
#[tokio::test]
async fn rollback_after_phase_one_brings_the_file_storage_back() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao().parallel()).await;
    env.write_kv(&token, "probe", "before").await;
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());

    // Guard: no room on the data volume for the raft copy (injected; the
    // refusal proves it fired): exit 1, nothing changed in the cluster. (The
    // backup is taken before this check, into its own folder here.)
    let refused_to = format!("{}/", env.cluster.dir().join("refused").display());
    let full = env
        .plugin_with_env(
            &[
                "migrate",
                "--to",
                "raft",
                "--backup-to",
                &refused_to,
                "--yes",
            ],
            &[("FAILPOINTS", "migrate::volume_full=return")],
        )
        .await;
    must(&full, 1);
    assert!(
        full.stderr.contains("KiB free") && full.stderr.contains("grow the volume first"),
        "{}",
        full.stderr
    );
    assert!(!env.checkpoint_exists().await, "no checkpoint");
    let s = env.seal_status(0).await;
    assert_eq!(
        (s["sealed"].clone(), s["storage_type"].clone()),
        (false.into(), "file".into()),
        "the pod still serves its file storage: {s}"
    );

    must(
        &env.plugin(&[
            "migrate",
            "--to",
            "raft",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await,
        0,
    );
    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let early = env.plugin(&["migrate", "--rollback", "--yes"]).await;
    must(&early, 1);
    assert!(
        early.stderr.contains("re-apply the standalone values"),
        "{}",
        early.stderr
    );
    assert!(env.checkpoint_exists().await, "nothing changed");

    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::File),
            replicas: Some(1),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let back = env.plugin(&["migrate", "--rollback", "--yes"]).await;
    must(&back, 0);
    assert!(back.stdout.contains("Rolled back"), "{}", back.stdout);
    assert!(!env.checkpoint_exists().await);
    assert_eq!(env.seal_status(0).await["storage_type"], "file");
    assert_eq!(env.read_kv(&token, "probe").await, "before");
    env.assert_no_secret_exposed().await;
}
