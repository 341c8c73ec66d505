//! exec (v5 through kube-rs, v4 through a raw WebSocket client), container
//! selection, port-forward, and the audit trail of exec.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use sandbox::Cluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::harness::*;

#[tokio::test]
async fn exec_streams_stdin_and_exit_codes() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let out = exec(
        &pods,
        "openbao-0",
        None,
        &["sh", "-c", "echo out; echo err >&2"],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.code()),
        ("out\n", "err\n", Some(0))
    );

    let out = exec(&pods, "openbao-0", None, &["sh", "-c", "exit 3"], None)
        .await
        .unwrap();
    assert_eq!(out.code(), Some(3));
    let st = out.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("NonZeroExitCode"));
    assert!(st
        .message
        .unwrap()
        .contains("error executing command [sh -c exit 3], exit code 3"));

    // stdin EOF reaches the process (v5 close signal): cat terminates.
    let big = "x".repeat(200_000);
    let out = exec(
        &pods,
        "openbao-0",
        None,
        &["sh", "-c", "cat | wc -c"],
        Some(&big),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout.trim(), "200000");

    // Clean environment: nothing from the test process leaks in.
    let out = exec(&pods, "openbao-0", None, &["env"], None)
        .await
        .unwrap();
    let mut keys: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split('=').next())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "BAO_ADDR",
            "BAO_API_ADDR",
            "BAO_CLUSTER_ADDR",
            "BAO_K8S_NAMESPACE",
            "BAO_K8S_POD_NAME",
            "HOME",
            "HOSTNAME",
            "HOST_IP",
            "PATH",
            "POD_IP",
            "SKIP_CHOWN",
            "SKIP_SETCAP",
            "TMPDIR"
        ]
    );
    let out = exec(&pods, "openbao-0", None, &["pwd"], None)
        .await
        .unwrap();
    assert!(out.stdout.trim().ends_with("pods/openbao-0"));

    // Sealed and uninitialized: bao status exits 2.
    let out = exec(
        &pods,
        "openbao-0",
        None,
        &["bao", "status", "-format=json"],
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.code(), Some(2));
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["initialized"], false);
}

#[tokio::test]
async fn sidecar_first_so_clients_must_choose_the_container() {
    let c = Cluster::start(sandbox::ClusterOptions::vault().replicas(1).sidecar(true))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let p = pods.get("vault-0").await.unwrap();
    let names: Vec<String> = p
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["agent", "vault"]);
    assert_eq!(
        p.metadata.annotations.unwrap()["kubectl.kubernetes.io/default-container"],
        "vault"
    );

    let out = exec(&pods, "vault-0", None, &["vault", "status"], None)
        .await
        .unwrap();
    assert_ne!(out.code(), Some(0), "the sidecar has no vault CLI");
    assert!(out
        .status
        .unwrap()
        .message
        .unwrap()
        .contains("executable file not found"));
    let out = exec(
        &pods,
        "vault-0",
        Some("agent"),
        &["sh", "-c", "command -v vault || echo none"],
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.stdout.trim(), "none");

    let out = exec(
        &pods,
        "vault-0",
        Some("vault"),
        &["vault", "status", "-format=json"],
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    let out = exec(
        &pods,
        "vault-0",
        Some("vault"),
        &["sh", "-c", "echo $VAULT_ADDR"],
        None,
    )
    .await
    .unwrap();
    let expected = if sandbox::running_as_root() {
        "http://127.0.0.1:8200".to_owned()
    } else {
        c.pod_api_addr(0)
    };
    assert_eq!(out.stdout.trim(), expected);

    let err = exec(&pods, "vault-0", Some("nope"), &["true"], None)
        .await
        .err()
        .unwrap();
    let kerr = err.downcast::<kube::Error>().unwrap();
    assert!(
        matches!(kerr, kube::Error::Api(ref s) if s.code == 400 && s.message.contains("container nope is not valid")),
        "{kerr:?}"
    );
    let err = exec(&pods, "vault-9", None, &["true"], None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err.downcast::<kube::Error>().unwrap(), kube::Error::Api(ref s) if s.code == 404)
    );
}

#[tokio::test]
async fn exec_over_v4_with_a_raw_websocket_client() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let url = format!(
        "{}/api/v1/namespaces/vault/pods/openbao-0/exec?command=sh&command=-c&command=echo+hi%3B+exit+4&stdout=true&stderr=true",
        c.server_url().replacen("http", "ws", 1)
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", c.token()).parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
    let (mut stdout, mut status) = (Vec::new(), None);
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m {
            match b[0] {
                1 => stdout.extend_from_slice(&b[1..]),
                3 => status = Some(serde_json::from_slice::<Value>(&b[1..]).unwrap()),
                _ => {}
            }
        }
    }
    assert_eq!(stdout, b"hi\n");
    let status = status.expect("status frame");
    assert_eq!(status["details"]["causes"][0]["message"], "4");
    let _ = ws.close(None).await;
}

#[tokio::test]
async fn portforward_reaches_the_pod_listener() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let mut pf = pods.portforward("openbao-0", &[8200]).await.unwrap();
    let mut s = pf.take_stream(8200).unwrap();
    s.write_all(b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"sealed\":true"), "{resp}");
    // The server closes the socket once the pod side closed; kube-rs then
    // reports SendAfterClosing from join(), so only the data path is asserted.
    drop(s);
    pf.abort();
}

#[tokio::test]
async fn audit_log_records_exec_argv_and_query_strings() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    exec(
        &pods,
        "openbao-0",
        Some("openbao"),
        &["sh", "-c", "echo audit-me"],
        None,
    )
    .await
    .unwrap();
    let _ = pods
        .list(&kube::api::ListParams::default().labels("component=server"))
        .await
        .unwrap();
    let log = std::fs::read_to_string(c.audit_log_path()).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let e = entries
        .iter()
        .find(|e| e["subresource"] == "exec")
        .expect("exec entry");
    assert_eq!(
        e["exec"]["command"],
        serde_json::json!(["sh", "-c", "echo audit-me"])
    );
    assert_eq!(e["exec"]["container"], "openbao");
    assert_eq!(e["verb"], "create");
    assert_eq!(e["code"], 101);
    assert!(
        e["requestURI"]
            .as_str()
            .unwrap()
            .contains("command=echo+audit-me")
            || e["requestURI"]
                .as_str()
                .unwrap()
                .contains("command=echo%20audit-me")
    );
    let l = entries
        .iter()
        .find(|e| e["verb"] == "list" && e["resource"] == "pods")
        .expect("list entry");
    assert!(
        l["query"]
            .as_str()
            .unwrap()
            .contains("labelSelector=component%3Dserver"),
        "{l}"
    );
}

#[tokio::test]
async fn concurrent_execs_keep_their_streams_apart() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let runs = (0..24).map(|i| {
        let pods = pods.clone();
        async move {
            let arg = i.to_string();
            let script = "cat; echo \" $0\"; echo err$0 >&2; exit $(( $0 % 5 ))";
            let input = format!("in{i}");
            let out = exec(
                &pods,
                "openbao-0",
                None,
                &["sh", "-c", script, &arg],
                Some(&input),
            )
            .await
            .unwrap();
            assert_eq!(out.stdout, format!("in{i} {i}\n"));
            assert_eq!(out.stderr, format!("err{i}\n"));
            assert_eq!(out.code(), Some(i % 5));
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test]
async fn a_vanished_exec_client_kills_its_command() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let ap = kube::api::AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let proc = pods
        .exec(
            "openbao-0",
            vec!["sh", "-c", "sleep 600 & echo $! > \"$HOME/pid\"; wait"],
            &ap,
        )
        .await
        .unwrap();
    let pid_file = c.dir().join("pods/openbao-0/home/pid");
    wait_until(std::time::Duration::from_secs(10), "pid file", || async {
        pid_file.exists()
    })
    .await
    .unwrap();
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    proc.abort();
    drop(proc);
    wait_until(
        std::time::Duration::from_secs(10),
        "sleep killed",
        || async {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn exec_upgrade_also_accepts_post() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let addr = c.server_url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /api/v1/namespaces/vault/pods/openbao-0/exec?command=true&stdout=true HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
        c.token()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455 accept key: {head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: v5.channel.k8s.io"),
        "{head}"
    );
}
