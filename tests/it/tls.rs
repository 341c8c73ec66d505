//! Pods whose listeners serve TLS (a generated CA, per-pod certificates,
//! `BAO_CACERT` in the container env as the charts mount it), on the
//! default transport: direct, checked against the container's own CA.

use crate::harness::Env;
use sandbox::ClusterOptions;

/// Every pod's transport and error in `status -o json`.
async fn pods(env: &Env) -> Vec<serde_json::Value> {
    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    status["pods"].as_array().expect("pods").clone()
}

#[tokio::test]
async fn tls_listeners_init_rotate_snapshot_and_refuse_a_foreign_ca() {
    // Init, snapshot, rotate, restart + unseal, restore: the plain-HTTP test's steps.
    let env = crate::rotate::snapshot_rotate_restore(
        ClusterOptions::openbao().parallel().tls_listener(true),
    )
    .await;
    let transports: Vec<_> = pods(&env)
        .await
        .iter()
        .map(|p| p["transport"].as_str().unwrap_or("none").to_owned())
        .collect();
    assert_eq!(transports, ["direct", "direct", "direct"]);
    let audit = std::fs::read_to_string(env.cluster.audit_log_path()).unwrap();
    assert!(
        audit.contains("/portforward"),
        "requests went through pods/portforward"
    );
    // Save and restore streamed through the API, not the container's CLI.
    assert!(
        audit.contains("\"subresource\":\"exec\""),
        "discovery execs"
    );
    assert!(
        !audit.contains("\"raft\",\"snapshot\""),
        "no `operator raft snapshot` exec"
    );

    // At the highest verbosity: neither bodies nor headers are logged.
    env.cluster.restart_all().await.unwrap();
    let run = env.plugin(&["-vvv", "unseal"]).await.ok();
    assert!(run.stderr.contains("tls=true"), "{}", run.stderr);
    env.assert_whole(3).await;
    env.assert_no_secret_exposed().await;

    // Pod 1 now serves a certificate from another CA.
    env.cluster.serve_foreign_listener_cert(1).unwrap();
    let ca = env.cluster.listener_ca_path().display().to_string();
    let mut fired = false;
    for _ in 0..40 {
        let (code, out) = env.bao(1, None, &["status"], None).await;
        if code != 0 && out.contains("certificate") {
            fired = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(fired, "pod 1 serves the foreign certificate");
    let status = pods(&env).await;
    let error = status[1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("openbao-1") && error.contains(&ca),
        "names the pod and the CA file: {status:?}"
    );
    assert_eq!(status[1]["transport"], "direct", "no fallback to exec");
    assert!(status[0]["error"].is_null(), "{status:?}");
    let run = env.plugin(&["unseal"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("openbao-1") && run.stderr.contains(&ca),
        "{}",
        run.stderr
    );
}
