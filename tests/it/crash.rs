//! The crash matrix: kill `init` at every step boundary, re-run it, and
//! prove nothing was lost.

use crate::harness::Env;
use sandbox::ClusterOptions;

/// Kills init at `failpoint`, re-runs it, then checks: every pod unsealed,
/// the raft peer set complete, the stored keys unseal every pod after a full
/// restart, and a KV secret written after init survives.
async fn crash_init_at(failpoint: &str, opts: ClusterOptions) {
    let env = Env::start(opts.replicas(3)).await;
    let crashed = env.plugin_crashing_at(&["init", "--yes"], failpoint).await;
    assert_ne!(
        crashed.code, 0,
        "the failpoint {failpoint} must stop the run: {crashed:?}"
    );
    assert!(
        crashed.stderr.contains(failpoint) || crashed.stderr.contains("panicked"),
        "{crashed:?}"
    );

    // status names the interrupted operation and the command that resumes it.
    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    if env.checkpoint_exists().await && status["credentials"]["present"] == false {
        assert_eq!(
            status["credentials"]["checkpoint"]["resume_command"], "kubectl vault init",
            "{status}"
        );
    }

    let resumed = env
        .plugin(&["init", "--yes", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(resumed["result"].is_string(), "{resumed}");
    env.assert_whole(3).await;
    assert!(!env.checkpoint_exists().await, "checkpoint deleted");

    let creds = env.stored_credentials().await.unwrap();
    let token = creds["root_token"].as_str().unwrap().to_owned();
    env.write_kv(&token, "probe", failpoint).await;
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    assert_eq!(env.read_kv(&token, "probe").await, failpoint);
    env.assert_no_secret_exposed().await;
}

macro_rules! crash_cases {
    ($($name:ident: $failpoint:literal, $opts:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_init_at($failpoint, $opts).await;
        }
    )*};
}

crash_cases! {
    crash_after_preflight: "init::after_preflight", ClusterOptions::openbao().parallel();
    crash_after_sys_init_before_storing: "init::after_sys_init", ClusterOptions::openbao().parallel();
    crash_after_checkpoint_before_unseal: "init::after_checkpoint", ClusterOptions::openbao().parallel();
    crash_after_clearing_the_pod_copy: "init::after_clear_copy", ClusterOptions::vault().ordered_ready();
    crash_after_leader_unsealed: "reconcile::after_initialized_unsealed", ClusterOptions::openbao().ordered_ready();
    crash_after_join_before_unseal: "reconcile::after_join", ClusterOptions::vault().parallel();
    crash_between_pods: "reconcile::after_pod", ClusterOptions::openbao().ordered_ready();
    crash_before_final_write: "init::before_final_write", ClusterOptions::openbao().parallel();
    crash_after_final_write_before_checkpoint_delete: "init::after_final_write", ClusterOptions::vault().parallel();
}
