//! Issue 10, item 11: a restore ends with every pod reading through the
//! restored keyring, against real servers.

use super::{assert_every_pod_reads, init, root_token};
use crate::harness::Env;
use sandbox::ClusterOptions;

/// A standby that kept the old keyring after a forced restore answers
/// `decryption failed` and refuses `sys/seal`. That race does not happen on
/// demand, so it is injected (the fault is proven to fire by the report):
/// converge sees pod 1 as stale and its `sys/seal` refused, restarts the pod
/// (a real pod deletion; a new server process) and unseals it.
#[tokio::test]
async fn a_standby_left_with_the_old_keyring_is_restarted_and_unsealed() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(2)).await;
    init(&env).await;
    let token = root_token(&env).await;
    env.write_kv(&token, "probe", "before").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.snap");
    let file = file.to_str().unwrap();
    env.plugin(&["snapshot", "save", "--to", file]).await.ok();
    env.write_kv(&token, "probe", "after").await;
    let pids_before = env.cluster.server_pids();
    let out = env
        .plugin_with_env(
            &["snapshot", "restore", "--from", file, "--yes"],
            &[(
                "FAILPOINTS",
                "converge::stale_standby=1*return;converge::seal_refused=return",
            )],
        )
        .await
        .ok();
    assert!(
        out.stdout.contains("restarted and unsealed"),
        "the injected stale standby was remedied: {out:?}"
    );
    let pids_after = env.cluster.server_pids();
    assert_eq!(pids_before.len(), 2);
    assert_ne!(pids_before[1], pids_after[1], "pod 1 runs a new server");
    assert_eq!(pids_before[0], pids_after[0], "pod 0 was left alone");
    assert_every_pod_reads(&env, &token, "probe", "before").await;
    env.assert_whole(2).await;
    env.assert_no_secret_exposed().await;
}
