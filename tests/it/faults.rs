//! Store faults, concurrency and bad input: each ends with a clear result and
//! nothing lost or changed.

use crate::harness::Env;
use sandbox::{ClusterOptions, SecretFault};

async fn init_survives_checkpoint_faults(fault: SecretFault) {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let checkpoint = format!("{}-checkpoint", env.secret_name());
    // The preflight write, then the keys write: both see 3 failures in a row.
    env.cluster.fail_secret_writes(&checkpoint, 3, fault);
    env.plugin(&["init", "--yes"]).await.ok();
    env.assert_whole(3).await;
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn checkpoint_write_fails_three_times_with_500() {
    init_survives_checkpoint_faults(SecretFault::ServerError).await;
}

#[tokio::test]
async fn checkpoint_write_fails_three_times_with_409() {
    init_survives_checkpoint_faults(SecretFault::Conflict).await;
}

#[tokio::test]
async fn checkpoint_write_fails_three_times_with_a_dropped_connection() {
    init_survives_checkpoint_faults(SecretFault::DropConnection).await;
}

#[tokio::test]
async fn unwritable_store_before_init_leaves_the_cluster_uninitialized() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.cluster.forbid("create", "secrets");
    let run = env.plugin(&["init", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("not initialized") || run.stderr.contains("was not initialized"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("openbao-unseal-checkpoint"),
        "names the object: {}",
        run.stderr
    );
    for i in 0..3 {
        assert_eq!(env.seal_status(i).await["initialized"], false);
    }
}

#[tokio::test]
async fn four_concurrent_inits_call_sys_init_once() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let runs =
        futures::future::join_all((0..4).map(|_| env.plugin(&["init", "--yes", "-o", "json"])))
            .await;
    for run in &runs {
        assert_eq!(run.code, 0, "every run ends cleanly: {run:?}");
    }
    let results: Vec<String> = runs
        .iter()
        .map(|r| r.json()["result"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        results.iter().filter(|r| *r == "initialized").count(),
        1,
        "{results:?}"
    );
    let audit = std::fs::read_to_string(env.cluster.audit_log_path()).unwrap();
    let inits = audit
        .lines()
        .filter(|l| l.contains("sys/init") && l.contains("/exec"))
        .count();
    assert_eq!(inits, 1, "exactly one sys/init exec");
    env.assert_whole(3).await;
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn threshold_above_shares_is_refused_without_change() {
    let env = Env::start(ClusterOptions::openbao().replicas(1)).await;
    let run = env
        .plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "4"])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--key-threshold 4"), "{}", run.stderr);
    assert_eq!(env.seal_status(0).await["initialized"], false);
    assert!(!env.checkpoint_exists().await);
}

#[tokio::test]
async fn no_matching_pods_is_a_clear_error() {
    let env = Env::start(ClusterOptions::openbao().replicas(1)).await;
    let run = env.plugin(&["status", "-l", "app=nothing"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("no pods match app=nothing in namespace vault"),
        "{}",
        run.stderr
    );
}

/// Writes `text` as the credentials document, replacing what is stored.
pub(crate) async fn overwrite_credentials(env: &Env, name: &str, key: &str, text: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let api: kube::Api<Secret> = kube::Api::namespaced(env.client().await, env.cluster.namespace());
    let mut secret = api.get_opt(name).await.unwrap().unwrap_or_default();
    secret.metadata.name = Some(name.to_owned());
    secret.data.get_or_insert_with(Default::default).insert(
        key.to_owned(),
        k8s_openapi::ByteString(text.as_bytes().to_vec()),
    );
    if secret.metadata.resource_version.is_some() {
        api.replace(name, &Default::default(), &secret)
            .await
            .unwrap();
    } else {
        api.create(&Default::default(), &secret).await.unwrap();
    }
}

#[tokio::test]
async fn corrupt_credentials_and_checkpoint_are_refused_without_change() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes"]).await.ok();
    let good = env.stored_credentials().await.unwrap();
    env.cluster.restart_all().await.unwrap();

    overwrite_credentials(
        &env,
        &env.secret_name(),
        "credentials.json",
        "{\"root_token\": \"x\", \"unseal_keys_b64\": [",
    )
    .await;
    let run = env.plugin(&["unseal"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("Secret vault/openbao-unseal is corrupt"),
        "{}",
        run.stderr
    );
    assert_eq!(env.seal_status(0).await["sealed"], true, "nothing unsealed");

    overwrite_credentials(
        &env,
        &env.secret_name(),
        "credentials.json",
        &good.to_string(),
    )
    .await;
    let checkpoint = format!("{}-checkpoint", env.secret_name());
    overwrite_credentials(&env, &checkpoint, "checkpoint.json", "{\"schema\": 99}").await;
    let run = env.plugin(&["init", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("openbao-unseal-checkpoint is corrupt")
            && run.stderr.contains("schema"),
        "{}",
        run.stderr
    );
    assert_eq!(env.seal_status(1).await["sealed"], true, "nothing unsealed");
}

#[tokio::test]
async fn wrong_shares_are_rejected_with_the_pod_named() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
        .await
        .ok();
    let mut creds = env.stored_credentials().await.unwrap();
    env.cluster.restart_all().await.unwrap();
    // Shares of another cluster: valid base64 of the right length, wrong values.
    let fake: Vec<String> = (1u8..=3)
        .map(|i| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [i; 33]))
        .collect();
    creds["unseal_keys_b64"] = serde_json::json!(fake);
    overwrite_credentials(
        &env,
        &env.secret_name(),
        "credentials.json",
        &creds.to_string(),
    )
    .await;
    let run = env.plugin(&["unseal"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("rejected the unseal shares") && run.stderr.contains("openbao-"),
        "{}",
        run.stderr
    );
    for i in 0..3 {
        let s = env.seal_status(i).await;
        assert_eq!(s["sealed"], true);
        assert_eq!(s["progress"], 0, "progress reset on pod {i}");
    }
}

#[tokio::test]
async fn forbidden_secrets_and_exec_name_the_permission() {
    let env = Env::start(ClusterOptions::openbao().replicas(1)).await;
    env.cluster.forbid("create", "pods/exec");
    // A plain-HTTP listener started as `bao server`: the pod spec tells
    // what the probe would, so status needs no exec at all.
    let run = env.plugin(&["status", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
    assert_eq!(status["cli"], "bao", "{status}");
    // `sys/init` always runs in the container: init asks for the grant
    // before it changes anything.
    let run = env.plugin(&["init", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("pods/exec"), "{}", run.stderr);
    assert_eq!(env.seal_status(0).await["initialized"], false);
    env.cluster.allow_all();
    env.cluster.forbid("get", "secrets");
    let run = env.plugin(&["init", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("not allowed to get Secret vault/openbao-unseal"),
        "{}",
        run.stderr
    );
    assert_eq!(env.seal_status(0).await["initialized"], false);
}

#[tokio::test]
async fn initialized_cluster_without_credentials_reports_them_lost() {
    let env = Env::start(ClusterOptions::openbao().replicas(1)).await;
    // Someone initialized by hand and kept nothing.
    let (code, out) = env
        .bao(
            0,
            None,
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
            None,
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let run = env.plugin(&["init", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("credentials") && run.stderr.contains("lost"),
        "{}",
        run.stderr
    );
    assert!(!env.secret_exists(&env.secret_name()).await);
}

#[tokio::test]
async fn wiped_cluster_with_surviving_keys_is_not_reinitialized() {
    let env = Env::start(ClusterOptions::openbao().replicas(1)).await;
    env.plugin(&["init", "--yes"]).await.ok();
    let creds = env.stored_credentials().await.unwrap();
    env.cluster.wipe_pod(0).await.unwrap();
    let run = env.plugin(&["init", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("kubectl vault recover"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.seal_status(0).await["initialized"],
        false,
        "not re-initialized"
    );
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        creds,
        "credentials untouched"
    );
}

#[tokio::test]
async fn a_pod_that_disappears_mid_unseal_is_reported() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes"]).await.ok();
    env.cluster.restart_all().await.unwrap();
    // The run pauses after it listed the pods; the pod goes away meanwhile.
    let unseal = env.plugin_with_env(
        &["unseal", "--timeout", "10s"],
        &[("FAILPOINTS", "unseal::after_listing_pods=sleep(3000)")],
    );
    let before = env.api_requests("list", "pods");
    let remove = async {
        // Once the run has listed the pods, however slowly it started.
        env.wait_for_api_requests("list", "pods", before + 1).await;
        env.cluster.remove_pod(2).await.unwrap();
    };
    let (run, ()) = tokio::join!(unseal, remove);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("openbao-2"),
        "names the pod: {}",
        run.stderr
    );
    assert!(run.stdout.contains("missing"), "waited for it: {run:?}");
    // The other pods were still unsealed.
    assert_eq!(env.seal_status(0).await["sealed"], false);
    assert_eq!(env.seal_status(1).await["sealed"], false);
}

#[tokio::test]
async fn init_without_yes_and_without_a_terminal_asks_for_confirmation_and_changes_nothing() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let run = env.plugin(&["init"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    for i in 0..3 {
        assert_eq!(env.seal_status(i).await["initialized"], false);
    }
    assert!(!env.checkpoint_exists().await);
}
