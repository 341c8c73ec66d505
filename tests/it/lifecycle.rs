//! init, unseal, join and status on real OpenBao pods, both CLI flavours and
//! both pod management policies.

use crate::harness::Env;
use sandbox::ClusterOptions;

async fn init_and_survive_restart(opts: ClusterOptions, replicas: u32) {
    let env = Env::start(opts.replicas(replicas)).await;
    let before = env.plugin(&["status", "-o", "json"]).await.ok().json();
    let pods = before["pods"].as_array().unwrap();
    assert!(
        pods.iter()
            .all(|p| p["initialized"] == false && p["sealed"] == true),
        "fresh cluster: {before}"
    );

    env.plugin(&["init", "--yes", "--key-shares", "5", "--key-threshold", "3"])
        .await
        .ok();
    env.assert_whole(replicas).await;
    assert!(
        !env.checkpoint_exists().await,
        "checkpoint deleted after init"
    );
    let creds = env.stored_credentials().await.unwrap();
    assert_eq!(creds["key_shares"], 5);
    assert_eq!(creds["key_threshold"], 3);
    assert_eq!(creds["generation"], 1);
    assert_eq!(creds["unseal_keys_b64"].as_array().unwrap().len(), 5);
    let token = creds["root_token"].as_str().unwrap().to_owned();
    env.write_kv(&token, "probe", "written-after-init").await;

    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(status["credentials"]["present"], true);
    assert_eq!(
        status["peers"].as_array().map(Vec::len),
        Some(replicas as usize),
        "{status}"
    );
    assert!(status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["sealed"] == false && p["raft_role"].is_string()));

    env.restart_all_and_unseal().await;
    env.assert_whole(replicas).await;
    assert_eq!(env.read_kv(&token, "probe").await, "written-after-init");

    // A second init is a no-op that reports the cluster as already initialized.
    let again = env
        .plugin(&["init", "--yes", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(again["result"], "already_initialized");
    let after = env.stored_credentials().await.unwrap();
    assert_eq!(
        after["root_token"], creds["root_token"],
        "credentials unchanged"
    );
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn init_openbao_parallel_three_pods() {
    init_and_survive_restart(ClusterOptions::openbao().parallel(), 3).await;
}

#[tokio::test]
async fn init_vault_cli_ordered_ready_three_pods() {
    // setNodeId: true, the charts' opt-in: raft node ids are the pod names.
    init_and_survive_restart(ClusterOptions::vault().ordered_ready().set_node_id(true), 3).await;
}

#[tokio::test]
async fn init_openbao_ordered_ready_with_retry_join() {
    init_and_survive_restart(
        ClusterOptions::openbao().ordered_ready().retry_join(true),
        3,
    )
    .await;
}

#[tokio::test]
async fn status_table_on_a_fresh_cluster_shows_sealed_uninitialized_pods() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let run = env.plugin(&["status"]).await.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("POD"), "{}", run.stdout);
    for i in 0..3 {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("openbao-{i} ")))
            .unwrap_or_else(|| panic!("pod {i} row: {}", run.stdout));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &cells[1..4],
            &["false", "false", "true"],
            "READY INITIALIZED SEALED for pod {i}"
        );
    }
    assert!(
        run.stdout
            .contains("Credentials: none in Secret vault/openbao-unseal"),
        "{}",
        run.stdout
    );
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&env.plugin(&["status", "-o", "yaml"]).await.ok().stdout).unwrap();
    assert_eq!(yaml["pods"].as_sequence().unwrap().len(), 3);
}

#[tokio::test]
async fn join_brings_a_wiped_pod_back() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes"]).await.ok();
    env.cluster.wipe_pod(2).await.unwrap();
    assert_eq!(env.seal_status(2).await["initialized"], false);
    // unseal cannot help an uninitialized pod, and says what to run.
    let run = env.plugin(&["unseal"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("kubectl vault join") || run.stdout.contains("kubectl vault join"),
        "{run:?}"
    );
    // The old raft member id must be removed before the node rejoins with empty data.
    env.plugin(&["join"]).await.ok();
    env.assert_whole(3).await;
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn scale_up_then_join_adds_voters() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes"]).await.ok();
    env.cluster.scale(5).await.unwrap();
    env.cluster
        .wait_for_pods(5, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    env.plugin(&["join"]).await.ok();
    env.assert_whole(5).await;
}

#[tokio::test]
async fn init_and_unseal_over_the_direct_transport() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    // `port-forward` is the old name of `direct`.
    env.plugin(&["--transport", "port-forward", "init", "--yes"])
        .await
        .ok();
    env.assert_whole(3).await;
    env.cluster.restart_all().await.unwrap();
    // At the highest verbosity, for the exposure check: no body, no header.
    let run = env
        .plugin(&["--transport", "direct", "-vvv", "unseal"])
        .await
        .ok();
    assert_eq!(run.stdout.matches("unsealed").count(), 3, "{}", run.stdout);
    env.assert_whole(3).await;
    let audit = std::fs::read_to_string(env.cluster.audit_log_path()).unwrap();
    assert!(
        audit.contains("/portforward"),
        "requests went through pods/portforward"
    );
    if env.cluster.spec().tls_listener {
        // Encrypted: the sandbox sees a port-forward per pod, not the lines.
        for pod in env.cluster.pod_names() {
            assert!(
                audit.contains(&format!("pods/{pod}/portforward")),
                "no port-forward to {pod}"
            );
        }
        assert!(!audit.contains("\"forwarded\":\"PUT /v1/sys/unseal"));
    } else {
        // The sandbox sees the forwarded request lines (what autounseal's
        // `unseal_writes` counts): 3 pods, threshold 3, after the restart.
        assert!(
            audit
                .matches("\"forwarded\":\"PUT /v1/sys/unseal HTTP/1.1\"")
                .count()
                >= 9,
            "the unseal shares went through the direct transport"
        );
    }
    env.assert_no_secret_exposed().await;
}

#[test]
fn shell_completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(crate::harness::plugin_binary())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("kubectl-vault") && text.contains("unseal") && text.contains("rotate"),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
    }
}
