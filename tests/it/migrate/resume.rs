//! A migrate killed at every phase boundary, and once while `operator
//! migrate` copies in the pod: each re-run finishes, and nothing is lost.

use super::{count_secrets, must, standalone_with_data, write_secrets, SECRETS};
use crate::harness::Env;
use sandbox::{ClusterOptions, Reconfigure, Storage};
use std::time::Instant;

/// Runs `args` with `failpoint` set to panic; proves it fired.
async fn crash_at(env: &Env, args: &[&str], failpoint: &str) {
    let crashed = env.plugin_crashing_at(args, failpoint).await;
    assert_eq!(
        crashed.code, 101,
        "{failpoint} must kill the run: {crashed:?}"
    );
    assert!(
        crashed.stderr.contains(failpoint),
        "the panic names {failpoint}: {}",
        crashed.stderr
    );
}

/// Kills at every phase boundary, and once while `operator migrate` runs
/// in the pod; each re-run finishes. Nothing is lost: after a full restart
/// the stored keys unseal every pod and the data reads back.
#[tokio::test]
async fn migrate_killed_at_every_phase_boundary_and_during_the_copy_finishes_on_rerun() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao().parallel()).await;
    write_secrets(&env, &env.cluster.pod_api_addr(0), &token);
    let stored_before = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .unwrap();
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());
    let phase1 = [
        "migrate",
        "--to",
        "raft",
        "--backup-to",
        &backup_to,
        "--yes",
    ];

    // Killed during the copy: the in-pod `operator migrate` dies with the
    // exec (the sandbox kills its process group when the client vanishes).
    let child = env.spawn_plugin(&phase1, &[]);
    let raft_db = env.cluster.dir().join("pods/openbao-0/data/raft/raft.db");
    let started = Instant::now();
    while !raft_db.exists() {
        assert!(started.elapsed().as_secs() < 60, "the copy never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(child); // kill_on_drop: SIGKILL
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(env.checkpoint_exists().await, "migrate_pending was written");
    assert_eq!(
        env.seal_status(0).await["sealed"],
        true,
        "killed while sealed"
    );

    for failpoint in [
        "migrate::before_seal",
        "migrate::before_copy",
        "migrate::after_copy",
    ] {
        crash_at(&env, &phase1, failpoint).await;
    }
    crash_at(&env, &phase1, "migrate::awaiting_raft_values").await;
    let rerun = env.plugin(&phase1).await;
    must(&rerun, 0);
    assert!(rerun.stdout.contains("Phase 1 is done"), "{}", rerun.stdout);
    assert_eq!(env.seal_status(0).await["sealed"], false);

    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let phase2 = ["migrate", "--to", "raft", "--timeout", "120s"];
    for failpoint in [
        "migrate::before_reconcile",
        "migrate::after_reconcile",
        "migrate::before_delete_checkpoint",
    ] {
        crash_at(&env, &phase2, failpoint).await;
        assert!(
            env.checkpoint_exists().await,
            "{failpoint}: checkpoint kept"
        );
    }
    must(&env.plugin(&phase2).await, 0);
    assert!(!env.checkpoint_exists().await);
    env.assert_whole(3).await;

    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    let leader = env.active_ordinal().await;
    assert_eq!(
        count_secrets(&env, &env.cluster.pod_api_addr(leader), &token),
        SECRETS
    );
    assert_eq!(
        env.secret_data(&env.secret_name(), "credentials.json")
            .await
            .unwrap(),
        stored_before
    );
    assert_eq!(env.sys_inits(), 1);
    env.assert_no_secret_exposed().await;
}
