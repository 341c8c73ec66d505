//! Auto-unseal clusters (OpenBao's `seal "static"`): init stores recovery
//! keys, pods unseal themselves and the plugin never submits anything to
//! `sys/unseal`, `rotate --recovery` and `--only-root-token` work with the
//! recovery keys, a crash at every rotate boundary loses nothing, and a
//! cluster initialized without recovery keys gets them.

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

/// A static-seal cluster restores a snapshot of itself in place; then every
/// pod loses its data, and `recover` brings the
/// snapshot back, the pods unseal themselves through the (same) seal key,
/// and the stored recovery keys and root token still work.
#[tokio::test]
async fn restore_in_place_then_recover_after_every_pod_is_wiped_on_a_static_seal_cluster() {
    let (env, creds) = initialized().await;
    let dir = tempfile::tempdir().unwrap();
    let to_dir = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to_dir])
        .await
        .ok();
    // A restore into the same, running cluster: the data written after the
    // snapshot is gone, every pod reads through the restored keyring.
    let token = creds["root_token"].as_str().unwrap();
    env.write_kv(token, "after", "later").await;
    env.plugin(&["snapshot", "restore", "--from", &to_dir, "--yes"])
        .await
        .ok();
    env.assert_whole(3).await;
    assert_eq!(env.read_kv(token, "before").await, "intact");
    let leader = env.active_ordinal().await;
    let (code, _) = env
        .bao(
            leader,
            Some(token),
            &["kv", "get", "-format=json", "kv/after"],
            None,
        )
        .await;
    assert_ne!(code, 0, "kv/after was written after the snapshot");
    for i in 0..3 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    assert_eq!(env.seal_status(0).await["initialized"], false);
    // Killed right after the restored pod 0 was restarted: the re-run finishes.
    let crashed = env
        .plugin_crashing_at(
            &["recover", "--from", &to_dir, "--yes"],
            "recover::after_auto_unseal_restart",
        )
        .await;
    assert_eq!(crashed.code, 101, "{crashed:?}");
    assert!(
        crashed
            .stderr
            .contains("recover::after_auto_unseal_restart"),
        "{}",
        crashed.stderr
    );
    assert!(env.checkpoint_exists().await);
    let recovered = env
        .plugin(&["recover", "--from", &to_dir, "--yes"])
        .await
        .ok();
    assert!(recovered.stdout.contains("generation 1"), "{recovered:?}");
    env.assert_whole(3).await;
    let token = creds["root_token"].as_str().unwrap();
    assert_eq!(env.read_kv(token, "before").await, "intact");
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        creds,
        "credentials untouched"
    );
    assert!(!env.checkpoint_exists().await);
    assert_eq!(
        unseal_writes(&env),
        0,
        "nothing was submitted to sys/unseal"
    );
    restart_all_and_see_them_unseal_themselves(&env, 3).await;
    // The stored recovery keys authorise the restored data's root token rotation.
    env.plugin(&["rotate", "--yes", "--only-root-token"])
        .await
        .ok();
    let after = env.stored_credentials().await.unwrap();
    assert_eq!(
        env.read_kv(after["root_token"].as_str().unwrap(), "before")
            .await,
        "intact"
    );
    env.assert_no_secret_exposed().await;
}

/// A snapshot of one static-seal cluster passes the restore-test (and
/// fails it when the stored root token or recovery keys are not its own),
/// and is refused, before anything is written, by a cluster with another
/// seal key, with the reason and the flag that asserts the same key; the
/// target's data and keys are untouched, and its restore-test of that
/// snapshot fails: its seal does not open it.
#[tokio::test]
async fn restore_into_a_cluster_with_another_seal_key_is_refused_clearly() {
    let (source, source_creds) = initialized().await;
    let dir = tempfile::tempdir().unwrap();
    let to_dir = format!("{}/", dir.path().display());
    let saved = source
        .plugin(&["snapshot", "save", "--to", &to_dir, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(saved["manifest"]["seal"], "static", "{saved}");
    let name = saved["manifest"]["snapshot"].as_str().unwrap().to_owned();

    restore_test_through_the_seal(&source, &to_dir, &name, &source_creds).await;
    drop(source);

    let target = Env::start(static_seal(1)).await;
    target.plugin(&["init", "--yes"]).await.ok();
    let target_creds = target.stored_credentials().await.unwrap();
    target
        .write_kv(target_creds["root_token"].as_str().unwrap(), "mine", "kept")
        .await;
    let creds_file = dir.path().join("source-credentials.json");
    std::fs::write(&creds_file, serde_json::to_vec(&source_creds).unwrap()).unwrap();
    let refused = target
        .plugin(&[
            "snapshot",
            "restore",
            "--from",
            &to_dir,
            "--snapshot",
            &name,
            "--credentials",
            creds_file.to_str().unwrap(),
            "--allow-foreign-cluster",
            "--yes",
        ])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("seal key") && refused.stderr.contains("--same-seal-key"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert!(!target.checkpoint_exists().await);
    assert_eq!(target.stored_credentials().await.unwrap(), target_creds);
    assert_eq!(
        target
            .read_kv(target_creds["root_token"].as_str().unwrap(), "mine")
            .await,
        "kept"
    );

    // The restore-test run here starts its throwaway server with this
    // cluster's seal, whose key does not open the other cluster's snapshot:
    // the server seals itself after the forced restore, and the test fails.
    let started = std::time::Instant::now();
    let tested = target
        .plugin(&[
            "snapshot",
            "verify",
            "--from",
            &to_dir,
            "--snapshot",
            &name,
            "--restore-test",
        ])
        .await;
    eprintln!(
        "restore-test under another seal key: {:?}",
        started.elapsed()
    );
    assert_eq!(tested.code, 1, "{tested:?}");
    assert!(
        tested.stderr.contains(
            "running with the live server's static seal, stayed sealed after the forced restore"
        ) && tested
            .stderr
            .contains("the seal does not open this snapshot"),
        "{tested:?}"
    );
    crate::snapshot::restore_test::assert_nothing_left(&target, Duration::from_secs(5)).await;
    assert_eq!(
        target
            .read_kv(target_creds["root_token"].as_str().unwrap(), "mine")
            .await,
        "kept"
    );
}

/// `snapshot verify --restore-test` of a static-seal snapshot: the throwaway server runs with the live seal
/// stanza (copied in the pod), the restored data reopens through it after
/// a restart, and the stored root token and recovery keys must be its own:
/// a stored token issued after the snapshot fails the test, and so do
/// stored recovery keys that are not the snapshot's. The live cluster is
/// unchanged and nothing is left in any pod.
async fn restore_test_through_the_seal(
    source: &Env,
    from: &str,
    name: &str,
    creds: &serde_json::Value,
) {
    use crate::snapshot::restore_test::{
        assert_nothing_left, live, replace_credentials, wait_for_voters,
    };
    let token = creds["root_token"].as_str().unwrap();
    source.write_kv(token, "sentinel", "live").await;
    wait_for_voters(source, token).await;
    let before = live(source, token).await;
    let verify = |extra: &'static [&'static str]| async move {
        let mut args = vec![
            "snapshot",
            "verify",
            "--from",
            from,
            "--snapshot",
            name,
            "--restore-test",
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        let started = std::time::Instant::now();
        let run = source.plugin(&args).await;
        eprintln!("restore-test on a static seal: {:?}", started.elapsed());
        run
    };
    let good = verify(&["--sentinel", "kv/before", "-v"]).await.ok();
    for line in good.stderr.lines().filter(|l| l.contains("step done")) {
        eprintln!("{line}");
    }
    let good = good.json();
    assert_eq!(good["result"], "passed", "{good}");
    assert_eq!(good["sentinel"], "kv/before", "{good}");
    assert_eq!(good["report"]["seal"], "static", "{good}");
    assert_eq!(good["report"]["shares_submitted"], 0, "{good}");
    assert_eq!(good["report"]["root_token_valid"], true, "{good}");
    assert_eq!(good["report"]["recovery_keys_verified"], true, "{good}");
    assert_eq!(good["server_removed"], true, "{good}");
    assert_nothing_left(source, Duration::from_secs(5)).await;

    // The stored root token replaced by one the live cluster issued after
    // the snapshot: valid here, unknown to the restored data.
    let leader = source.active_ordinal().await;
    let (code, out) = source
        .bao(
            leader,
            Some(token),
            &["token", "create", "-policy=root", "-format=json"],
            None,
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let later: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut doc = creds.clone();
    doc["root_token"] = later["auth"]["client_token"].clone();
    replace_credentials(source, &doc).await;
    let run = verify(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("no stored root token of key generation 1 answers auth/token/lookup-self in the restored data"),
        "{run:?}"
    );
    assert_nothing_left(source, Duration::from_secs(5)).await;

    // The stored recovery keys damaged (each share's first byte flipped):
    // the restored data's recovery-key rotation refuses them.
    let mut doc = creds.clone();
    for share in doc["recovery_keys_b64"].as_array_mut().unwrap() {
        let mut bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            share.as_str().unwrap(),
        )
        .unwrap();
        bytes[0] ^= 0xff;
        *share = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes).into();
    }
    replace_credentials(source, &doc).await;
    let run = verify(&[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "the stored recovery keys of key generation 1, which the manifest names, are not the restored data's"
        ),
        "{run:?}"
    );
    replace_credentials(source, creds).await;
    assert_nothing_left(source, Duration::from_secs(5)).await;
    assert_eq!(
        live(source, token).await,
        before,
        "the live cluster changed"
    );
    // The recovery keys the probes sent, and the root token, went through
    // stdin only.
    source.assert_no_secret_exposed().await;
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
    let mut watcher = env.spawn_plugin(&["unseal", "--watch", "--interval", "1s"], &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.seal_status(0).await["sealed"], true, "the seal refuses");
    std::fs::write(&key, &good).unwrap();
    env.cluster.restart_pod(0).await.unwrap();
    restart_all_and_see_them_unseal_themselves(&env, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher.start_kill().unwrap();
    let watched = env.finish_spawned(watcher).await;
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
