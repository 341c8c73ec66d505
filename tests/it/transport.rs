//! How requests reach the pods: `--transport auto` (the default) uses the
//! Vault API through port-forward, and exec where the cluster offers no
//! usable port-forward; `status` names the transport each pod took.

use crate::harness::Env;
use sandbox::ClusterOptions;

/// Port-forward requests in the audit log answered with `code`.
fn portforwards_answered(env: &Env, code: u64) -> usize {
    env.audit_entries()
        .iter()
        .filter(|e| e["subresource"] == "portforward" && e["code"] == code)
        .count()
}

/// The transport `status -o json` reports for every pod.
async fn transports(env: &Env) -> Vec<String> {
    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p["transport"].as_str().unwrap_or("none").to_owned())
        .collect()
}

#[tokio::test]
async fn auto_uses_exec_where_port_forward_is_forbidden_or_not_websocket() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;

    // RBAC without pods/portforward: the chart then needs no grant.
    env.cluster.forbid("create", "pods/portforward");
    env.plugin(&["init", "--yes"]).await.ok();
    env.assert_whole(3).await;
    assert!(
        portforwards_answered(&env, 403) > 0,
        "port-forward was tried and refused"
    );
    assert_eq!(transports(&env).await, ["exec", "exec", "exec"]);

    // An API server without WebSocket port-forward answers the upgrade with 400.
    env.cluster.allow_all();
    env.cluster.serve_websocket_portforward(false);
    env.cluster.restart_all().await.unwrap();
    let run = env.plugin(&["unseal"]).await.ok();
    assert_eq!(run.stdout.matches("unsealed").count(), 3, "{}", run.stdout);
    assert!(
        env.cluster.refused_portforwards() > 0,
        "the 400 fault fired"
    );
    assert_eq!(transports(&env).await, ["exec", "exec", "exec"]);
    env.assert_whole(3).await;

    // Chosen explicitly, direct names the way out instead of falling back.
    let run = env.plugin(&["--transport", "direct", "unseal"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("--transport exec"), "{}", run.stderr);

    // With WebSocket port-forward served, the default is direct.
    env.cluster.serve_websocket_portforward(true);
    assert_eq!(transports(&env).await, ["direct", "direct", "direct"]);
    env.assert_no_secret_exposed().await;
}
