//! Snapshots of a static-seal cluster: restored in place, then recovered
//! after every pod lost its data (the pods unseal themselves, nothing is
//! submitted to `sys/unseal`); the restore-test through the seal; and a
//! restore into a cluster with another seal key, refused before anything
//! is written.

use super::{initialized, restart_all_and_see_them_unseal_themselves, static_seal, unseal_writes};
use crate::harness::Env;
use std::time::Duration;

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
