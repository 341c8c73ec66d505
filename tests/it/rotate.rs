//! rotate on real OpenBao: rekey with verification and root token rotation,
//! the crash matrix, an active-node restart mid-rotate, store faults and bad
//! input.

use crate::harness::Env;
use sandbox::{ClusterOptions, SecretFault};

/// A 3-pod cluster, initialized, with a KV secret written before any rotate.
pub async fn initialized(opts: ClusterOptions) -> (Env, serde_json::Value) {
    let env = Env::start(opts.replicas(3)).await;
    env.plugin(&["init", "--yes", "--key-shares", "5", "--key-threshold", "3"])
        .await
        .ok();
    let creds = env.stored_credentials().await.unwrap();
    env.write_kv(
        creds["root_token"].as_str().unwrap(),
        "before-rotate",
        "intact",
    )
    .await;
    (env, creds)
}

async fn token_works(env: &Env, token: &str) -> bool {
    let leader = env.active_ordinal().await;
    env.bao(
        leader,
        Some(token),
        &["token", "lookup", "-format=json"],
        None,
    )
    .await
    .0 == 0
}

/// What every case must end with: the stored current generation unseals every
/// restarted pod, the previous one is in history, the KV secret is intact,
/// the stored root token works and the old one is revoked when it changed.
async fn assert_rotated(env: &Env, before: &serde_json::Value, rekeyed: bool) {
    assert!(!env.checkpoint_exists().await, "checkpoint deleted");
    let after = env.stored_credentials().await.unwrap();
    if rekeyed {
        let generation = after["generation"].as_u64().unwrap();
        assert!(generation >= 2, "{after}");
        assert_eq!(
            after["history"][0]["generation"].as_u64(),
            Some(generation - 1),
            "previous generation in history"
        );
        assert_ne!(after["unseal_keys_b64"], before["unseal_keys_b64"]);
    }
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    let token = after["root_token"].as_str().unwrap();
    assert!(token_works(env, token).await, "stored root token works");
    assert_eq!(env.read_kv(token, "before-rotate").await, "intact");
    let old = before["root_token"].as_str().unwrap();
    if old != token {
        assert!(!token_works(env, old).await, "old root token revoked");
    }
    env.assert_no_secret_exposed().await;
}

async fn rotate_both(opts: ClusterOptions) {
    let (env, before) = initialized(opts).await;
    let out = env
        .plugin(&[
            "rotate",
            "--yes",
            "--root-token",
            "--key-shares",
            "4",
            "--key-threshold",
            "2",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(out["rekeyed"], true);
    assert_eq!(out["root_token_rotated"], true);
    let after = env.stored_credentials().await.unwrap();
    assert_eq!(after["key_shares"], 4);
    assert_eq!(after["key_threshold"], 2);
    assert_eq!(after["unseal_keys_b64"].as_array().unwrap().len(), 4);
    assert_eq!(
        after["history"][0]["unseal_keys_b64"],
        before["unseal_keys_b64"]
    );
    assert_ne!(after["root_token"], before["root_token"]);
    assert_rotated(&env, &before, true).await;
}

#[tokio::test]
async fn rotate_openbao_cli() {
    rotate_both(ClusterOptions::openbao().parallel()).await;
}

#[tokio::test]
async fn rotate_vault_cli() {
    rotate_both(ClusterOptions::vault().parallel()).await;
}

#[tokio::test]
async fn only_root_token_keeps_the_shares() {
    let (env, before) = initialized(ClusterOptions::openbao().parallel()).await;
    env.plugin(&["rotate", "--yes", "--only-root-token"])
        .await
        .ok();
    let after = env.stored_credentials().await.unwrap();
    assert_eq!(after["unseal_keys_b64"], before["unseal_keys_b64"]);
    assert_eq!(after["generation"], 1);
    assert_rotated(&env, &before, false).await;
}

async fn crash_rotate_at(failpoint: &str) {
    let (env, before) = initialized(ClusterOptions::openbao().parallel()).await;
    let crashed = env
        .plugin_crashing_at(&["rotate", "--yes", "--root-token"], failpoint)
        .await;
    assert_ne!(
        crashed.code, 0,
        "{failpoint} must stop the run: {crashed:?}"
    );
    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    if env.checkpoint_exists().await {
        assert_eq!(
            status["credentials"]["checkpoint"]["resume_command"], "kubectl vault rotate",
            "{status}"
        );
    }
    // A pod that restarts now unseals with whichever generation the server accepts.
    env.cluster.restart_pod(2).await.unwrap();
    let unsealed = env.plugin(&["unseal", "-o", "json"]).await.ok().json();
    let pod2 = unsealed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == "openbao-2")
        .unwrap()
        .clone();
    assert_eq!(pod2["result"], "unsealed", "{unsealed}");
    assert!(
        matches!(pod2["generation"].as_u64(), Some(1 | 2)),
        "reports the generation used: {unsealed}"
    );
    env.plugin(&["rotate", "--yes", "--root-token"]).await.ok();
    assert_rotated(&env, &before, true).await;
}

macro_rules! rotate_crash_cases {
    ($($name:ident: $failpoint:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_rotate_at($failpoint).await;
        }
    )*};
}

rotate_crash_cases! {
    rotate_crash_after_update_before_checkpoint: "rotate::after_update";
    rotate_crash_after_checkpoint_before_verify: "rotate::after_checkpoint";
    rotate_crash_after_verify_before_final_write: "rotate::after_verify";
    rotate_crash_after_final_write: "rotate::after_final_write";
    root_crash_after_generate: "root::after_generate";
    root_crash_after_checkpoint: "root::after_checkpoint";
    root_crash_after_final_write_before_revoke: "root::after_final_write";
    root_crash_after_revoke: "root::after_revoke";
}

#[tokio::test]
async fn active_node_restart_between_update_and_verify_loses_nothing() {
    let (env, before) = initialized(ClusterOptions::openbao().parallel()).await;
    let crashed = env
        .plugin_crashing_at(&["rotate", "--yes"], "rotate::after_checkpoint")
        .await;
    assert_ne!(crashed.code, 0);
    let leader = env.active_ordinal().await;
    env.cluster.restart_pod(leader).await.unwrap();
    env.plugin(&["unseal"]).await.ok();
    let resumed = env.plugin(&["rotate", "--yes"]).await;
    assert_eq!(resumed.code, 1, "{resumed:?}");
    assert!(
        resumed.stderr.contains("Nothing changed") && resumed.stderr.contains("generation 1"),
        "{}",
        resumed.stderr
    );
    assert!(!env.checkpoint_exists().await);
    assert_eq!(
        env.stored_credentials().await.unwrap()["unseal_keys_b64"],
        before["unseal_keys_b64"]
    );
    // Nothing lost: the old shares still unseal everything, and a fresh rotate works.
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    env.plugin(&["rotate", "--yes"]).await.ok();
    assert_rotated(&env, &before, true).await;
}

async fn rotate_survives_checkpoint_faults(fault: SecretFault) {
    let (env, before) = initialized(ClusterOptions::openbao().parallel()).await;
    env.cluster
        .fail_secret_writes(&format!("{}-checkpoint", env.secret_name()), 3, fault);
    env.plugin(&["rotate", "--yes"]).await.ok();
    assert_rotated(&env, &before, true).await;
}

#[tokio::test]
async fn rotate_checkpoint_write_fails_with_500() {
    rotate_survives_checkpoint_faults(SecretFault::ServerError).await;
}

#[tokio::test]
async fn rotate_checkpoint_write_fails_with_409() {
    rotate_survives_checkpoint_faults(SecretFault::Conflict).await;
}

#[tokio::test]
async fn rotate_checkpoint_write_fails_with_a_dropped_connection() {
    rotate_survives_checkpoint_faults(SecretFault::DropConnection).await;
}

#[tokio::test]
async fn rotate_refuses_bad_input_without_change() {
    let (env, before) = initialized(ClusterOptions::openbao().parallel()).await;
    let run = env
        .plugin(&[
            "rotate",
            "--yes",
            "--key-shares",
            "2",
            "--key-threshold",
            "3",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--key-threshold 3"), "{}", run.stderr);

    env.cluster.restart_pod(1).await.unwrap();
    let run = env.plugin(&["rotate", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("sealed") && run.stderr.contains("kubectl vault unseal"),
        "{}",
        run.stderr
    );
    env.plugin(&["unseal"]).await.ok();

    // Credentials that do not match the cluster.
    let mut wrong = before.clone();
    wrong["key_shares"] = serde_json::json!(3);
    wrong["unseal_keys_b64"] =
        serde_json::json!(before["unseal_keys_b64"].as_array().unwrap()[..3]);
    crate::faults::overwrite_credentials(
        &env,
        &env.secret_name(),
        "credentials.json",
        &wrong.to_string(),
    )
    .await;
    let run = env.plugin(&["rotate", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("do not match the cluster"),
        "{}",
        run.stderr
    );
    crate::faults::overwrite_credentials(
        &env,
        &env.secret_name(),
        "credentials.json",
        &before.to_string(),
    )
    .await;

    // A corrupt checkpoint.
    let checkpoint = format!("{}-checkpoint", env.secret_name());
    crate::faults::overwrite_credentials(
        &env,
        &checkpoint,
        "checkpoint.json",
        "{\"schema\":1,\"phase\":{\"phase\":\"rotate_pending\"}}",
    )
    .await;
    let run = env.plugin(&["rotate", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("checkpoint is corrupt"),
        "{}",
        run.stderr
    );

    assert_eq!(
        env.stored_credentials().await.unwrap(),
        before,
        "credentials unchanged"
    );
    for i in 0..3 {
        assert_eq!(
            env.seal_status(i).await["t"],
            3,
            "threshold unchanged on pod {i}"
        );
    }
}

#[tokio::test]
async fn concurrent_rotate_and_init_both_end_cleanly() {
    let (env, before) = initialized(ClusterOptions::openbao().parallel()).await;
    let (rotate, init) = tokio::join!(
        env.plugin(&["rotate", "--yes"]),
        env.plugin(&["init", "--yes"])
    );
    assert_eq!((rotate.code, init.code), (0, 0), "{rotate:?}\n{init:?}");
    assert_rotated(&env, &before, true).await;
}

#[tokio::test]
async fn snapshot_from_before_a_rotate_unseals_with_the_previous_generation() {
    snapshot_rotate_restore(ClusterOptions::openbao().parallel()).await;
}

/// Init, snapshot save, rotate, restart and unseal, restore the snapshot:
/// the cluster comes back whole on the snapshot's generation.
pub async fn snapshot_rotate_restore(opts: ClusterOptions) -> Env {
    let (env, before) = initialized(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &target])
        .await
        .ok();
    env.plugin(&["rotate", "--yes"]).await.ok();
    let rotated = env.stored_credentials().await.unwrap();
    assert_eq!(rotated["generation"], 2);
    // A full restart right after the rotate unseals with the new shares.
    env.cluster.restart_all().await.unwrap();
    let unsealed = env.plugin(&["unseal", "-o", "json"]).await.ok().json();
    assert!(
        unsealed
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["generation"] == 2),
        "{unsealed}"
    );

    let restored = env
        .plugin(&["snapshot", "restore", "--from", &target, "--yes"])
        .await
        .ok();
    assert!(
        format!("{}{}", restored.stdout, restored.stderr).contains("generation 1"),
        "says which generation: {restored:?}"
    );
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    let token = before["root_token"].as_str().unwrap();
    assert_eq!(env.read_kv(token, "before-rotate").await, "intact");
    // Issue 10 item 4: the restored generation is current; the newer one
    // is kept in the history.
    let stored = env.stored_credentials().await.unwrap();
    assert_eq!(stored["generation"], 1, "{stored:?}");
    assert_eq!(stored["history"][0]["generation"], 2);
    assert_eq!(
        stored["history"][0]["unseal_keys_b64"],
        rotated["unseal_keys_b64"]
    );
    env
}
