//! The hook Job's command on the sandbox: first install, after every pod
//! restarted, killed halfway, two at once, and with too few rights.

use crate::harness::Env;
use k8s_openapi::api::core::v1::Event;
use sandbox::ClusterOptions;

pub(crate) const HOOK: [&str; 8] = [
    "hook",
    "--log-format",
    "json",
    "--key-shares",
    "3",
    "--key-threshold",
    "2",
    "--timeout=180s",
];

async fn events(env: &Env) -> Vec<String> {
    let api: kube::Api<Event> = kube::Api::namespaced(env.client().await, env.cluster.namespace());
    let list = api.list(&Default::default()).await.expect("list events");
    list.items
        .iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("StatefulSet"))
        .filter_map(|e| e.reason.clone())
        .collect()
}

fn assert_json_logs(stderr: &str) {
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

async fn hook_first_install_and_after_restart(opts: ClusterOptions) {
    let env = Env::start(opts.replicas(3)).await;
    let run = env.plugin(&HOOK).await.ok();
    assert_json_logs(&run.stderr);
    env.assert_whole(3).await;
    assert!(events(&env).await.contains(&"VaultReady".to_owned()));

    // An upgrade that restarted every pod: the hook unseals them again.
    env.cluster.restart_all().await.unwrap();
    env.plugin(&HOOK).await.ok();
    env.assert_whole(3).await;
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn hook_on_parallel_cluster() {
    hook_first_install_and_after_restart(ClusterOptions::vault().parallel()).await;
}

/// An upgrade that replaces every pod can leave the StatefulSet with none
/// when the hook starts: the hook waits for them (within its timeout) and
/// unseals them, rather than refusing.
#[tokio::test]
async fn hook_waits_for_pods_an_upgrade_is_still_creating() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&HOOK).await.ok();
    let zero = sandbox::Reconfigure {
        replicas: Some(0),
        ..Default::default()
    };
    env.cluster.reconfigure(zero).await.unwrap();
    assert!(env.cluster.pod_names().is_empty(), "no pods left");
    let before = env.api_requests("list", "pods");
    let hook = env.spawn_plugin(&HOOK, &[]);
    // The StatefulSet grows back only once the hook has found it empty
    // (twice: its first list may have been another part's), however slowly
    // the hook starts.
    env.wait_for_api_requests("list", "pods", before + 2).await;
    let three = sandbox::Reconfigure {
        replicas: Some(3),
        ..Default::default()
    };
    env.cluster.reconfigure(three).await.unwrap();
    let run = env.finish_spawned(hook).await.ok();
    assert!(
        run.stderr.contains("no server pods yet"),
        "the hook saw the empty StatefulSet and waited: {}",
        run.stderr
    );
    assert_json_logs(&run.stderr);
    env.assert_whole(3).await;
}

#[tokio::test]
async fn hook_on_ordered_ready_cluster() {
    hook_first_install_and_after_restart(ClusterOptions::openbao().ordered_ready()).await;
}

#[tokio::test]
async fn hook_killed_halfway_then_retried_loses_nothing() {
    let env = Env::start(ClusterOptions::openbao().ordered_ready().replicas(3)).await;
    let crashed = env.plugin_crashing_at(&HOOK, "reconcile::after_pod").await;
    assert_ne!(crashed.code, 0);
    env.plugin(&HOOK).await.ok();
    env.assert_whole(3).await;
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
}

#[tokio::test]
async fn two_overlapping_hooks_initialize_once() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let (a, b) = tokio::join!(env.plugin(&HOOK), env.plugin(&HOOK));
    assert_eq!((a.code, b.code), (0, 0), "{a:?}\n{b:?}");
    let audit = std::fs::read_to_string(env.cluster.audit_log_path()).unwrap();
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("sys/init") && l.contains("/exec"))
            .count(),
        1
    );
    env.assert_whole(3).await;
}

#[tokio::test]
async fn hook_with_a_missing_permission_exits_non_zero_and_names_it() {
    for (verb, resource, named) in [
        ("create", "pods/exec", "pods/exec"),
        ("get", "secrets", "Secret"),
        ("create", "leases", "Lease"),
        ("list", "pods", "list pods"),
    ] {
        let env = Env::start(ClusterOptions::openbao().replicas(1)).await;
        env.cluster.forbid(verb, resource);
        let run = env.plugin(&HOOK).await;
        assert_eq!(run.code, 1, "{verb} {resource}: {run:?}");
        assert!(
            run.stderr.contains(named)
                && (run.stderr.contains("forbidden") || run.stderr.contains("not allowed")),
            "{verb} {resource}: {}",
            run.stderr
        );
        assert_json_logs(&run.stderr);
        assert_eq!(
            env.seal_status(0).await["initialized"],
            false,
            "{verb} {resource}: nothing initialized"
        );
    }
}
