//! Restore and recover killed at every failpoint: a re-run (or the resume
//! command `status` prints) finishes, the data is the snapshot's and the
//! stored credentials are unchanged; `init` does not take over a half-done
//! recover.

use super::{assert_secrets, init, root_token, write_secrets};
use crate::harness::Env;
use sandbox::ClusterOptions;

/// Saves, writes more, restores crashing at `failpoint`, re-runs: the data is
/// the snapshot's and the credentials are unchanged.
async fn crash_restore_at(failpoint: &str) {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(2)).await;
    init(&env).await;
    let token = root_token(&env).await;
    env.write_kv(&token, "probe", "before").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.snap");
    env.plugin(&["snapshot", "save", "--to", file.to_str().unwrap()])
        .await
        .ok();
    env.write_kv(&token, "probe", "after").await;
    let creds = env.stored_credentials().await.unwrap();
    let args = [
        "snapshot",
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--yes",
    ];
    let crashed = env.plugin_crashing_at(&args, failpoint).await;
    assert_ne!(
        crashed.code, 0,
        "{failpoint} must stop the run: {crashed:?}"
    );
    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    if env.checkpoint_exists().await {
        // The resume command names the snapshot, and runs as printed.
        let resume = status["credentials"]["checkpoint"]["resume_command"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            resume,
            format!("kubectl vault snapshot restore --from {}", file.display()),
            "{status}"
        );
        let mut printed: Vec<&str> = resume.split_whitespace().skip(2).collect();
        printed.push("--yes");
        env.plugin(&printed).await.ok();
    } else {
        env.plugin(&args).await.ok();
    }
    env.assert_whole(2).await;
    assert_eq!(env.read_kv(&token, "probe").await, "before");
    assert_eq!(env.stored_credentials().await.unwrap(), creds);
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

/// Wipes every pod, recovers crashing at `failpoint`, re-runs.
async fn crash_recover_at(failpoint: &str) {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(2)).await;
    init(&env).await;
    let token = root_token(&env).await;
    write_secrets(&env, &token, 20, failpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to]).await.ok();
    let creds = env.stored_credentials().await.unwrap();
    for i in 0..2 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    let args = ["recover", "--from", to.as_str(), "--yes"];
    let crashed = env.plugin_crashing_at(&args, failpoint).await;
    assert_ne!(
        crashed.code, 0,
        "{failpoint} must stop the run: {crashed:?}"
    );
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        creds,
        "credentials untouched by the crash"
    );
    // init must not take over a half-done recover.
    let init = env.plugin(&["init", "--yes"]).await;
    assert_eq!(init.code, 1, "{init:?}");
    assert!(init.stderr.contains("kubectl vault recover"), "{init:?}");
    env.plugin(&args).await.ok();
    env.assert_whole(2).await;
    assert_secrets(&env, &token, 20, failpoint).await;
    assert_eq!(env.stored_credentials().await.unwrap(), creds);
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

macro_rules! crash_cases {
    ($run:ident: $($name:ident: $failpoint:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            $run($failpoint).await;
        }
    )*};
}

crash_cases! { crash_restore_at:
    restore_crash_after_pending_checkpoint: "restore::after_pending_checkpoint";
    restore_crash_after_apply: "restore::after_apply";
    restore_crash_after_applied_checkpoint: "restore::after_applied_checkpoint";
    restore_crash_after_unseal: "restore::after_unseal";
}

crash_cases! { crash_recover_at:
    recover_crash_after_preflight: "recover::after_preflight";
    recover_crash_after_temp_init: "recover::after_temp_init";
    recover_crash_after_temp_checkpoint: "recover::after_temp_checkpoint";
    recover_crash_after_temp_leader: "recover::after_temp_leader";
    recover_crash_after_restore: "recover::after_restore";
    recover_crash_after_applied_checkpoint: "recover::after_applied_checkpoint";
    recover_crash_after_reconcile: "recover::after_reconcile";
}
