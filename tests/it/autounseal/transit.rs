//! Auto-unseal through a transit seal provider (one more server outside the
//! StatefulSet, as another OpenBao cluster would be): pods unseal
//! themselves; with the provider down a restarted pod cannot start, and
//! `status` and `unseal` name the provider, exit 1 and change nothing; when
//! it is back the pod unseals itself and `unseal --watch` reports it.
//! Recovery keys rotate, authorise a root token rotation, a snapshot passes
//! the restore-test through the transit seal, and a wiped cluster is
//! recovered from it. (The Vault flavour on a transit
//! seal is `rotate_recovery_crash_matrix`.)

use super::{token_works, unseal_writes, wait_until_unsealed_through};
use crate::harness::Env;
use sandbox::{ClusterOptions, Seal};
use std::time::Duration;

async fn transit_cluster(opts: ClusterOptions) -> (Env, serde_json::Value) {
    let env = Env::start(opts.parallel().replicas(3).seal(Seal::Transit)).await;
    let before = env.seal_status(0).await;
    assert_eq!(
        (before["type"].as_str(), before["recovery_seal"].as_bool()),
        (Some("transit"), Some(true)),
        "{before}"
    );
    env.plugin(&["init", "--yes"]).await.ok();
    assert_eq!(env.sys_inits(), 1);
    let creds = env.stored_credentials().await.unwrap();
    assert_eq!(creds["seal"], "transit", "{creds:#}");
    assert_eq!(creds["recovery_keys_b64"].as_array().unwrap().len(), 5);
    assert_eq!(creds["unseal_keys_b64"].as_array().unwrap().len(), 0);
    env.write_kv(creds["root_token"].as_str().unwrap(), "before", "intact")
        .await;
    (env, creds)
}

#[tokio::test]
async fn transit_provider_down_is_named_changes_nothing_and_its_return_is_reported() {
    let (env, creds) = transit_cluster(ClusterOptions::openbao()).await;
    env.assert_whole(3).await;
    super::restart_all_and_see_them_unseal_themselves_through(&env, 3, "transit").await;

    // The provider goes away; a pod that restarts now cannot start (the
    // server exits on `Error configuring seal "transit"`, as measured).
    env.cluster.seal_provider_down().await.unwrap();
    let restarted = env.cluster.restart_pod(0).await;
    let err = restarted.expect_err("the server cannot start without its provider");
    assert!(
        format!("{err:#}").contains("Error configuring seal \"transit\""),
        "{err:#}"
    );
    let status = env.plugin(&["status"]).await;
    assert_eq!(status.code, 1, "{status:?}");
    assert!(
        status
            .stdout
            .contains("Not running: openbao-0: its transit seal provider failed it at start"),
        "{}",
        status.stdout
    );
    assert!(status.stderr.contains("bring it back"), "{}", status.stderr);
    let json = env.plugin(&["status", "-o", "json"]).await;
    assert_eq!(json.code, 1);
    let pod0 = &json.json()["pods"][0];
    assert_eq!(pod0["seal_provider_failure"]["seal"], "transit", "{pod0:#}");
    let unseal = env.plugin(&["unseal"]).await;
    assert_eq!(unseal.code, 1, "{unseal:?}");
    assert!(
        unseal.stdout.contains("seal provider failed") && unseal.stdout.contains("openbao-0"),
        "{}",
        unseal.stdout
    );
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        creds,
        "nothing stored changed"
    );
    assert!(!env.checkpoint_exists().await);
    assert_eq!(unseal_writes(&env), 0, "nothing was submitted");

    // The watcher reports the failure once, and the pod's return.
    let watch = env.spawn_watched(&["unseal", "--watch", "--interval", "1s"], &[]);
    watch
        .wait_for("openbao-0: seal provider failed", Duration::from_secs(60))
        .await;
    env.cluster.seal_provider_up().await.unwrap();
    wait_until_unsealed_through(&env, 3, "transit").await;
    watch
        .wait_for("(was: seal provider failed)", Duration::from_secs(60))
        .await;
    watch.interrupt();
    let watched = env.finish_watched(watch).await;
    assert_eq!(watched.code, 0, "{watched:?}");
    let failed = watched
        .stderr
        .lines()
        .filter(|l| l.contains("openbao-0: seal provider failed"))
        .count();
    assert_eq!(failed, 1, "reported once: {}", watched.stderr);
    // The pass that sees it back may catch it unsealed already, or a moment
    // before its seal unsealed it: either way the return is reported once.
    let back = watched
        .stderr
        .lines()
        .filter(|l| {
            l.contains("openbao-0: ")
                && l.contains("(was: seal provider failed)")
                && (l.contains("already unsealed") || l.contains("unsealed itself"))
        })
        .count();
    assert_eq!(back, 1, "{}", watched.stderr);

    // Recovery keys authorise a rotation and a root token rotation here too.
    env.plugin(&["rotate", "--yes", "--recovery"]).await.ok();
    env.plugin(&["rotate", "--yes", "--only-root-token"])
        .await
        .ok();
    let after = env.stored_credentials().await.unwrap();
    assert_eq!(after["generation"], 2);
    assert_ne!(after["root_token"], creds["root_token"]);
    let token = after["root_token"].as_str().unwrap();
    assert!(token_works(&env, token).await);
    super::restart_all_and_see_them_unseal_themselves_through(&env, 3, "transit").await;
    assert_eq!(env.read_kv(token, "before").await, "intact");

    // Every pod wiped, the provider's key intact: recover brings the data
    // back, and the restored pods unseal through the provider.
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap();
    env.plugin(&["snapshot", "save", "--to", location])
        .await
        .ok();
    // The restore-test opens it through the transit seal, whose stanza
    // (with the provider's token) is copied inside the pod, never read by
    // the plugin; a restart reopens it through the provider.
    let started = std::time::Instant::now();
    let tested = env
        .plugin(&[
            "snapshot",
            "verify",
            "--from",
            location,
            "--restore-test",
            "--sentinel",
            "kv/before",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    eprintln!("restore-test on a transit seal: {:?}", started.elapsed());
    assert_eq!(tested["result"], "passed", "{tested}");
    assert_eq!(tested["report"]["seal"], "transit", "{tested}");
    assert_eq!(tested["report"]["recovery_keys_verified"], true, "{tested}");
    assert_eq!(tested["sentinel"], "kv/before", "{tested}");
    crate::snapshot::restore_test::assert_nothing_left(&env, Duration::from_secs(5)).await;
    // The provider's token, which the copied stanza carries, appears in no
    // exec URL (the audit log), Event or plugin output.
    let transit_token = std::fs::read_to_string(
        env.cluster
            .dir()
            .join("secrets")
            .join("openbao-seal")
            .join("transit-token"),
    )
    .expect("the pods' transit token");
    env.assert_no_secret_exposed_in(&serde_json::json!({ "root_token": transit_token.trim() }))
        .await;
    for i in 0..3 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    let recovered = env
        .plugin(&["recover", "--from", location, "--yes", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        recovered["recovery_keys_accepted"], true,
        "the stored recovery keys were proven on the restored data: {recovered}"
    );
    wait_until_unsealed_through(&env, 3, "transit").await;
    env.assert_whole(3).await;
    assert_eq!(env.read_kv(token, "before").await, "intact");
    assert_eq!(unseal_writes(&env), 0);
    env.assert_no_secret_exposed().await;
}
