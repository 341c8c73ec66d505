//! Recovery keys of an auto-unseal cluster through their life: `rotate
//! --recovery` killed at every boundary (on the Vault flavour's transit
//! seal), creating them on a cluster initialized without any, keeping them
//! when init is killed after `sys/init`, and carrying them encrypted
//! through `credentials show`, `export` and `import`. Each time they
//! authorise a root token rotation.

use super::{
    initialized_with, restart_all_and_see_them_unseal_themselves,
    restart_all_and_see_them_unseal_themselves_through, seal_config, static_seal, token_works,
    unseal_writes,
};
use crate::harness::Env;
use sandbox::{ClusterOptions, Seal};
use std::time::Duration;

/// `rotate --recovery` killed at every boundary, on one cluster: each time a
/// re-run finishes (or reports that nothing changed and a fresh run does).
/// After each, a root token rotation (authorised by the stored recovery
/// keys) is killed at one of its boundaries and re-run: the stored token
/// works every time. Then `snapshot save --restore-test` passes through the
/// transit seal.
#[tokio::test]
async fn rotate_recovery_crash_matrix() {
    // The hashicorp/vault chart's shape (a `vault` CLI, VAULT_* env) on a
    // transit seal (Vault has no static seal), so both flavours and both
    // seals are covered without another cluster.
    let (env, creds) = initialized_with(
        ClusterOptions::vault()
            .parallel()
            .replicas(3)
            .seal(Seal::Transit),
    )
    .await;
    let mut generation = 1;
    for (failpoint, root_failpoint) in [
        ("rotate::after_update", "root::after_generate"),
        ("rotate::after_checkpoint", "root::after_checkpoint"),
        ("rotate::after_verify", "root::after_final_write"),
        ("rotate::after_final_write", "root::after_revoke"),
    ] {
        let crashed = env
            .plugin_crashing_at(&["rotate", "--yes", "--recovery"], failpoint)
            .await;
        assert_eq!(
            crashed.code, 101,
            "{failpoint} must kill the run: {crashed:?}"
        );
        assert!(
            crashed.stderr.contains(failpoint),
            "{failpoint} fired: {}",
            crashed.stderr
        );
        let rerun = env.plugin(&["rotate", "--yes", "--recovery"]).await;
        if rerun.code == 1 && rerun.stderr.contains("Nothing changed") {
            env.plugin(&["rotate", "--yes", "--recovery"]).await.ok();
        } else {
            assert_eq!(rerun.code, 0, "{failpoint}: {rerun:?}");
        }
        assert!(!env.checkpoint_exists().await, "{failpoint}");
        let stored = env.stored_credentials().await.unwrap();
        let now = stored["generation"].as_u64().unwrap();
        assert!(
            now > generation,
            "{failpoint}: generation {now} after {generation}"
        );
        generation = now;
        assert!(
            stored["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["recovery_keys_b64"] == creds["recovery_keys_b64"]),
            "{failpoint}: the first generation stays in the history"
        );
        // The stored keys are the cluster's: they authorise a root token
        // rotation, which is killed too and finished by a re-run.
        let crashed = env
            .plugin_crashing_at(&["rotate", "--yes", "--only-root-token"], root_failpoint)
            .await;
        assert_eq!(crashed.code, 101, "{root_failpoint}: {crashed:?}");
        assert!(
            crashed.stderr.contains(root_failpoint),
            "{root_failpoint} fired: {}",
            crashed.stderr
        );
        env.plugin(&["rotate", "--yes", "--only-root-token"])
            .await
            .ok();
        assert!(!env.checkpoint_exists().await, "{root_failpoint}");
        let token = env.stored_credentials().await.unwrap()["root_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            token_works(&env, &token).await,
            "{root_failpoint}: stored token works"
        );
    }
    restart_all_and_see_them_unseal_themselves_through(&env, 3, "transit").await;
    let token = env.stored_credentials().await.unwrap()["root_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(env.read_kv(&token, "before").await, "intact");
    env.assert_whole(3).await;
    // `snapshot save --restore-test` on the Vault flavour's transit seal:
    // the throwaway `vault server` takes up the copied transit stanza, and
    // the generation the rotations left is the restored data's.
    seal_config::save_passes_the_restore_test(&env, &token, "transit").await;
    env.assert_no_secret_exposed().await;
}

/// OpenBao's default (no recovery keys) only on request, and `rotate
/// --recovery` then creates them, and they authorise a root token rotation.
#[tokio::test]
async fn recovery_keys_on_openbaos_default_are_created_by_rotate_recovery() {
    let env = Env::start(static_seal(1)).await;
    let refused = env.plugin(&["init", "--recovery-shares", "0"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(env.sys_inits(), 0, "nothing initialized");

    let init = env
        .plugin(&["init", "--yes", "--recovery-shares", "0"])
        .await
        .ok();
    assert!(
        init.stderr.contains("rotate --recovery"),
        "warns: {}",
        init.stderr
    );
    let creds = env.stored_credentials().await.unwrap();
    assert!(creds.get("recovery_keys_b64").is_none(), "{creds:#}");
    assert_eq!(creds["key_shares"], 0);
    let status = env.plugin(&["status"]).await.ok().stdout;
    assert!(status.contains("no recovery keys stored"), "{status}");
    env.write_kv(creds["root_token"].as_str().unwrap(), "before", "intact")
        .await;

    let root = env.plugin(&["rotate", "--yes", "--only-root-token"]).await;
    assert_eq!(root.code, 1, "{root:?}");
    assert!(root.stderr.contains("rotate --recovery"), "{}", root.stderr);

    env.plugin(&["rotate", "--yes", "--recovery"]).await.ok();
    let created = env.stored_credentials().await.unwrap();
    assert_eq!(created["recovery_keys_b64"].as_array().unwrap().len(), 5);
    assert_eq!(
        (
            created["key_shares"].as_u64(),
            created["key_threshold"].as_u64()
        ),
        (Some(5), Some(3))
    );
    assert_eq!(env.seal_status(0).await["n"], 5, "the server has them too");

    env.plugin(&["rotate", "--yes", "--only-root-token"])
        .await
        .ok();
    let after = env.stored_credentials().await.unwrap();
    assert_ne!(after["root_token"], creds["root_token"]);
    restart_all_and_see_them_unseal_themselves(&env, 1).await;
    assert_eq!(
        env.read_kv(after["root_token"].as_str().unwrap(), "before")
            .await,
        "intact"
    );
    env.assert_no_secret_exposed().await;
}

/// init killed after `sys/init` answered, before the answer was stored: the
/// re-run finds the pod-local copy and stores its recovery keys; they then
/// authorise a root token rotation. No second `sys/init`.
#[tokio::test]
async fn init_killed_after_sys_init_keeps_the_recovery_keys() {
    let env = Env::start(static_seal(1)).await;
    let crashed = env
        .plugin_crashing_at(&["init", "--yes"], "init::after_sys_init")
        .await;
    assert_eq!(crashed.code, 101, "{crashed:?}");
    assert!(
        crashed.stderr.contains("init::after_sys_init"),
        "{}",
        crashed.stderr
    );
    assert!(env.stored_credentials().await.is_none());
    env.plugin(&["init", "--yes"]).await.ok();
    assert_eq!(env.sys_inits(), 1, "one sys/init");
    let creds = env.stored_credentials().await.unwrap();
    assert_eq!(creds["recovery_keys_b64"].as_array().unwrap().len(), 5);
    assert_eq!(creds["key_threshold"], 3);
    env.write_kv(creds["root_token"].as_str().unwrap(), "before", "intact")
        .await;
    env.plugin(&["rotate", "--yes", "--only-root-token"])
        .await
        .ok();
    restart_all_and_see_them_unseal_themselves(&env, 1).await;

    // The hook after an upgrade: nothing to do, nothing submitted.
    env.plugin(&crate::hook::HOOK).await.ok();
    // `unseal --watch` waits on a pod whose seal refuses, and reports it
    // once the pod unsealed itself.
    let key = env.cluster.static_seal_key_path();
    let good = std::fs::read(&key).unwrap();
    std::fs::write(&key, [9u8; 32]).unwrap();
    env.cluster.restart_pod(0).await.unwrap();
    let watcher = env.spawn_watched(&["unseal", "--watch", "--interval", "1s"], &[]);
    // The watcher found the refusing pod and waits (up to 30 s) for it.
    watcher
        .wait_for(
            "sealed; waiting for it to unseal itself through its seal",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(env.seal_status(0).await["sealed"], true, "the seal refuses");
    std::fs::write(&key, &good).unwrap();
    env.cluster.restart_pod(0).await.unwrap();
    restart_all_and_see_them_unseal_themselves(&env, 1).await;
    watcher
        .wait_for("unsealed itself through its seal", Duration::from_secs(60))
        .await;
    watcher.interrupt();
    let watched = env.finish_watched(watcher).await;
    assert!(
        watched.stderr.contains("unsealed itself through its seal"),
        "{}",
        watched.stderr
    );
    assert_eq!(unseal_writes(&env), 0, "hook and watcher submitted nothing");
    let after = env.stored_credentials().await.unwrap();
    assert_eq!(
        env.read_kv(after["root_token"].as_str().unwrap(), "before")
            .await,
        "intact"
    );
    env.assert_no_secret_exposed().await;
}

/// Recovery keys in the SOPS envelope from the first write; `credentials
/// show` lists them by fingerprint only, `export` encrypts them, and after
/// the Secret is deleted `import` proves them by a recovery-key rekey probe
/// (cancelled) and stores them again, encrypted.
#[tokio::test]
async fn recovery_keys_travel_encrypted_through_show_export_and_import() {
    let env = Env::start(static_seal(1)).await;
    let keys = tempfile::tempdir().unwrap();
    let key = crate::credentials::keygen(keys.path(), "ops");
    let identity = key.file.to_str().unwrap();
    env.plugin(&[
        "init",
        "--yes",
        "--age-recipient",
        &key.recipient,
        "--age-identity",
        identity,
    ])
    .await
    .ok();
    let creds = env.stored_credentials_sops(&key.file).await.unwrap();
    let recovery: Vec<String> = creds["recovery_keys_b64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 5);
    let raw = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .unwrap();
    for k in &recovery {
        assert!(
            !raw.contains(k.as_str()),
            "a recovery key in plaintext in the Secret"
        );
    }

    let shown = env
        .plugin(&[
            "credentials",
            "show",
            "--age-identity",
            identity,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(shown["seal"], "static");
    assert_eq!(
        shown["recovery_keys"].as_array().unwrap().len(),
        5,
        "{shown}"
    );
    assert!(shown["recovery_keys"][0]["sha256"].is_string());
    assert!(shown["recovery_keys"][0]
        .get("value")
        .is_none_or(|v| v.is_null()));

    let file = keys.path().join("unseal.sops.yaml");
    env.plugin(&[
        "credentials",
        "export",
        "-f",
        file.to_str().unwrap(),
        "--age-identity",
        identity,
    ])
    .await
    .ok();
    let exported = std::fs::read_to_string(&file).unwrap();
    for k in &recovery {
        assert!(
            !exported.contains(k.as_str()),
            "a recovery key in plaintext in the export"
        );
    }

    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client().await, env.cluster.namespace());
    api.delete(&env.secret_name(), &Default::default())
        .await
        .unwrap();
    let imported = env
        .plugin(&[
            "credentials",
            "import",
            "-f",
            file.to_str().unwrap(),
            "--age-identity",
            identity,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(imported["proof"]["proof"], "rekey_probe", "{imported}");
    let back = env.stored_credentials_sops(&key.file).await.unwrap();
    assert_eq!(back["recovery_keys_b64"], creds["recovery_keys_b64"]);
    assert_eq!(back["seal"], "static");
    // The imported keys still authorise a root token rotation.
    env.plugin(&[
        "rotate",
        "--yes",
        "--only-root-token",
        "--age-identity",
        identity,
    ])
    .await
    .ok();
    env.assert_no_secret_exposed_in(&creds).await;
}
