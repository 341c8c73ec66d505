//! Pods whose listeners serve TLS (a generated CA, per-pod certificates,
//! `BAO_CACERT` in the container env as the charts mount it), on the
//! default transport: direct, checked against the container's own CA.

use crate::harness::Env;
use sandbox::{ClusterOptions, ListenerCa};

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

/// Listeners that require client certificates, with the CA named by
/// `BAO_CAPATH` (a folder): the default transport stays direct, presenting
/// the container's client certificate and trusting the folder's files.
#[tokio::test]
async fn client_certificates_and_a_ca_folder_keep_the_direct_transport() {
    let (env, creds) = crate::rotate::initialized(
        ClusterOptions::openbao()
            .parallel()
            .tls_listener(true)
            .listener_ca(ListenerCa::CaPath)
            .listener_client_auth(true),
    )
    .await;
    // The listeners really refuse a client without a certificate.
    let out = tokio::process::Command::new(crate::harness::deps_bin().join("bao"))
        .args(["status"])
        .env_clear()
        .env("BAO_ADDR", env.cluster.pod_api_addr(0))
        .env("BAO_CACERT", env.cluster.listener_ca_path())
        .env("HOME", env.home())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .await
        .unwrap();
    let refused = String::from_utf8_lossy(&out.stderr);
    // The refusal reads "certificate required" or, when the alert loses
    // the race with the request, a broken pipe, a reset or a connection
    // that "could not be established"; whatever the words, never an answer.
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("Initialized"),
        "no client certificate, no answer: {refused}"
    );

    let status = pods(&env).await;
    for p in &status {
        assert_eq!(p["transport"], "direct", "{status:?}");
        assert!(p["error"].is_null(), "{status:?}");
    }
    env.cluster.restart_all().await.unwrap();
    let run = env.plugin(&["-vvv", "unseal"]).await.ok();
    assert!(
        run.stderr.contains("BAO_CLIENT_CERT=") && run.stderr.contains("BAO_CAPATH="),
        "says what it presents and trusts: {}",
        run.stderr
    );
    let (_, key) = env.cluster.listener_client_cert().unwrap();
    let key = std::fs::read_to_string(key).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(
        !run.stderr.contains(body) && !run.stdout.contains(body),
        "the client key is never printed"
    );
    env.assert_whole(3).await;
    let token = creds["root_token"].as_str().unwrap();
    assert_eq!(env.read_kv(token, "before-rotate").await, "intact");
    let audit = std::fs::read_to_string(env.cluster.audit_log_path()).unwrap();
    assert!(audit.contains("/portforward"), "through pods/portforward");
    assert!(
        !audit.contains(body),
        "the client key is not in the audit log"
    );
    env.assert_no_secret_exposed().await;
}

/// The container names no CA; the server config's listener stanza does
/// (`tls_client_ca_file`): the direct transport verifies every listener
/// with it, as `status` of the uninitialized pods shows.
#[tokio::test]
async fn a_ca_named_only_in_the_listener_stanza_serves_the_direct_transport() {
    let env = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(3)
            .tls_listener(true)
            .listener_ca(ListenerCa::ServerConfig),
    )
    .await;
    let run = env.plugin(&["-vv", "status", "-o", "json"]).await;
    let status = run.json();
    let pods = status["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 3, "{status}");
    for p in pods {
        assert_eq!(p["transport"], "direct", "{status}");
        assert!(p["error"].is_null(), "{status}");
        assert_eq!(p["initialized"], false, "{status}");
    }
    // Pod 1 then serves a certificate from another CA: refused, naming
    // where the trusted CA was found.
    env.cluster.serve_foreign_listener_cert(1).unwrap();
    let mut refused = String::new();
    for _ in 0..40 {
        let status = env.plugin(&["status", "-o", "json"]).await.json();
        refused = status["pods"][1]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        refused.contains("openbao-1") && refused.contains("tls_client_ca_file="),
        "{refused}"
    );
}
