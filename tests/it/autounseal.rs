//! Auto-unseal clusters (OpenBao's `seal "static"`): init stores recovery
//! keys, pods unseal themselves and the plugin never submits anything to
//! `sys/unseal`, `rotate --recovery` and `--only-root-token` work with the
//! recovery keys, a crash at every rotate boundary loses nothing, and a
//! cluster initialized without recovery keys gets them.
//!
//! Here the static seal's story; by noun: `recovery_keys` (rotated, created,
//! kept, exported), `restore` (snapshots of a static-seal cluster),
//! `seal_config` (a seal set outside the HCL config) and `transit` (a
//! transit seal provider).

mod recovery_keys;
mod restore;
mod seal_config;
mod transit;

use crate::harness::Env;
use sandbox::{ClusterOptions, Seal};
use std::time::Duration;

fn static_seal(replicas: u32) -> ClusterOptions {
    ClusterOptions::openbao()
        .parallel()
        .replicas(replicas)
        .seal(Seal::Static)
}

/// How often the audit log shows a write to `sys/unseal`: an exec of the
/// CLI, or a request through the direct transport (`forwarded`).
fn unseal_writes(env: &Env) -> usize {
    let audit = std::fs::read_to_string(env.cluster.audit_log_path()).expect("audit log");
    audit
        .lines()
        .filter(|l| {
            (l.contains("exec") && (l.contains("sys/unseal") || l.contains("sys%2Funseal")))
                || l.contains("\"forwarded\":\"PUT /v1/sys/unseal ")
        })
        .count()
}

/// Every pod of a restarted cluster is unsealed again without any help.
async fn restart_all_and_see_them_unseal_themselves(env: &Env, replicas: u32) {
    restart_all_and_see_them_unseal_themselves_through(env, replicas, "static").await
}

async fn restart_all_and_see_them_unseal_themselves_through(env: &Env, replicas: u32, seal: &str) {
    env.cluster.restart_all().await.expect("restart all");
    wait_until_unsealed_through(env, replicas, seal).await;
}

/// Waits up to 30 s for every pod to be unsealed through `seal`.
async fn wait_until_unsealed_through(env: &Env, replicas: u32, seal: &str) {
    for i in 0..replicas {
        let mut status = env.seal_status(i).await;
        for _ in 0..120 {
            if status["sealed"] == false {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            status = env.seal_status(i).await;
        }
        assert_eq!(status["sealed"], false, "pod {i} unsealed itself: {status}");
        assert_eq!(status["type"], seal, "{status}");
    }
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

/// A 3-pod static-seal cluster, initialized with the default 5/3 recovery
/// keys, a KV secret written.
async fn initialized() -> (Env, serde_json::Value) {
    initialized_with(static_seal(3)).await
}

async fn initialized_with(opts: ClusterOptions) -> (Env, serde_json::Value) {
    let opts_seal = opts.seal;
    let env = Env::start(opts).await;
    let before = env.seal_status(0).await;
    let expected = match opts_seal {
        Seal::Transit => "transit",
        _ => "static",
    };
    assert_eq!(
        (before["type"].as_str(), before["recovery_seal"].as_bool()),
        (Some(expected), Some(true)),
        "{before}"
    );
    env.plugin(&["init", "--yes"]).await.ok();
    assert_eq!(env.sys_inits(), 1);
    let creds = env.stored_credentials().await.unwrap();
    env.write_kv(creds["root_token"].as_str().unwrap(), "before", "intact")
        .await;
    (env, creds)
}

#[tokio::test]
async fn static_seal_init_restart_status_rotate_recovery_and_root_token() {
    let (env, creds) = initialized().await;
    assert_eq!(creds["seal"], "static", "{creds:#}");
    assert_eq!(creds["schema"], 2);
    assert_eq!(creds["unseal_keys_b64"].as_array().unwrap().len(), 0);
    assert_eq!(creds["recovery_keys_b64"].as_array().unwrap().len(), 5);
    assert_eq!(
        (
            creds["key_shares"].as_u64(),
            creds["key_threshold"].as_u64()
        ),
        (Some(5), Some(3))
    );
    env.assert_whole(3).await;
    assert_eq!(
        unseal_writes(&env),
        0,
        "init submitted nothing to sys/unseal"
    );

    // Restarted pods unseal themselves; `unseal` only reports, and a pod
    // that is still sealed when it looks is waited for, never sent a key.
    restart_all_and_see_them_unseal_themselves(&env, 3).await;
    env.cluster.restart_pod(1).await.unwrap();
    let unsealed = env.plugin(&["unseal", "-o", "json"]).await.ok().json();
    let pod1 = unsealed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == "openbao-1")
        .unwrap()
        .clone();
    assert!(
        matches!(
            pod1["result"].as_str(),
            Some("already unsealed" | "unsealed itself (static seal)")
        ),
        "{unsealed}"
    );
    assert_eq!(unseal_writes(&env), 0, "unseal submitted nothing");

    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    for pod in status["pods"].as_array().unwrap() {
        assert_eq!(pod["seal"], "static", "{status}");
    }
    assert_eq!(status["credentials"]["seal"], "static");
    assert_eq!(status["credentials"]["recovery_keys"], 5);
    let table = env.plugin(&["status"]).await.ok().stdout;
    assert!(
        table.contains("SEAL") && table.contains("recovery keys stored"),
        "{table}"
    );

    // The seal refuses (its key is not the one the data was sealed with):
    // the pod stays sealed, `unseal` says why, exits 1 and submits nothing;
    // with the key back the pod unseals itself again.
    let key = env.cluster.static_seal_key_path();
    let good = std::fs::read(&key).unwrap();
    std::fs::write(&key, [7u8; 32]).unwrap();
    env.cluster.restart_pod(2).await.unwrap();
    let refused = env.plugin(&["unseal"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("unreachable or refusing") && refused.stderr.contains("openbao-2"),
        "{}",
        refused.stderr
    );
    let status = env.plugin(&["status"]).await;
    assert_eq!(
        status.code, 1,
        "a refusing provider is not a healthy cluster: {status:?}"
    );
    assert!(
        status.stderr.contains("openbao-2 (static seal) is sealed"),
        "{}",
        status.stderr
    );
    let table = status.stdout;
    assert!(
        table.contains("Sealed:      openbao-2: it unseals itself through its static seal"),
        "{table}"
    );
    assert_eq!(
        unseal_writes(&env),
        0,
        "nothing submitted while the seal refused"
    );
    std::fs::write(&key, &good).unwrap();
    env.cluster.restart_pod(2).await.unwrap();
    restart_all_and_see_them_unseal_themselves(&env, 3).await;

    // A plain rotate has no unseal shares to rekey here: refused, with the way.
    let plain = env.plugin(&["rotate", "--yes"]).await;
    assert_eq!(plain.code, 1, "{plain:?}");
    assert!(
        plain.stderr.contains("rotate --recovery"),
        "{}",
        plain.stderr
    );

    let out = env
        .plugin(&["rotate", "--yes", "--recovery", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (out["rekeyed"].as_bool(), out["api"].as_str()),
        (Some(true), Some("sys/rotate/recovery"))
    );
    let rotated = env.stored_credentials().await.unwrap();
    assert_eq!(rotated["generation"], 2);
    assert_ne!(rotated["recovery_keys_b64"], creds["recovery_keys_b64"]);
    assert_eq!(
        rotated["history"][0]["recovery_keys_b64"],
        creds["recovery_keys_b64"]
    );
    assert!(!env.checkpoint_exists().await);

    // The root token rotation is authorised by the new recovery keys.
    env.plugin(&["rotate", "--yes", "--only-root-token"])
        .await
        .ok();
    let after = env.stored_credentials().await.unwrap();
    assert_ne!(after["root_token"], rotated["root_token"]);
    assert_eq!(after["recovery_keys_b64"], rotated["recovery_keys_b64"]);

    restart_all_and_see_them_unseal_themselves(&env, 3).await;
    env.assert_whole(3).await;
    let token = after["root_token"].as_str().unwrap();
    assert!(token_works(&env, token).await);
    assert!(
        !token_works(&env, creds["root_token"].as_str().unwrap()).await,
        "old token revoked"
    );
    assert_eq!(env.read_kv(token, "before").await, "intact");
    // The stored recovery keys are the current ones: a probe rotation with
    // them is taken (and a fresh rotate works).
    env.plugin(&["rotate", "--yes", "--recovery"]).await.ok();
    assert_eq!(env.stored_credentials().await.unwrap()["generation"], 3);
    assert_eq!(unseal_writes(&env), 0);
    env.assert_no_secret_exposed().await;
}
