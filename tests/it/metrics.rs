//! `unseal --watch --metrics-addr` serves Prometheus metrics that follow the
//! cluster: parsed with a text-format parser after a pod restart (sealed,
//! then unsealed by the watcher), a rotate killed with its checkpoint
//! waiting, and the rotate finished. `snapshot save --pushgateway` posts
//! its outcome (to a capturing HTTP endpoint standing in for the gateway).

use crate::harness::Env;
use sandbox::ClusterOptions;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One scrape: `name{labels}` (labels sorted) to value.
pub(crate) fn scrape(addr: &str) -> Option<HashMap<String, f64>> {
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition format parses");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("{}: unexpected {other:?}", s.metric),
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    Some(out)
}

/// Scrapes until `ready` holds (60 s), returning that scrape.
pub(crate) async fn scrape_until(
    addr: &str,
    what: &str,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        if let Some(m) = scrape(addr) {
            if ready(&m) {
                return m;
            }
            last = Some(m);
        }
        assert!(Instant::now() < deadline, "{what} never showed: {last:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) fn get(m: &HashMap<String, f64>, key: &str) -> Option<f64> {
    m.get(key).copied()
}

#[tokio::test]
async fn the_watchers_metrics_follow_restarts_checkpoints_and_rotations() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes"]).await.ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let watch = env.spawn_plugin(
        &[
            "unseal",
            "--watch",
            "--interval",
            "1s",
            "--metrics-addr",
            &addr,
        ],
        &[],
    );
    let pods = env.cluster.pod_names();
    // Autopilot reports a failure tolerance once the followers are voters.
    let m = scrape_until(&addr, "three unsealed pods and autopilot", |m| {
        pods.iter().all(|p| {
            get(m, &format!("kubectl_vault_pod_sealed{{pod={p}}}")) == Some(0.0)
                && get(m, &format!("kubectl_vault_pod_up{{pod={p}}}")) == Some(1.0)
        }) && get(m, "kubectl_vault_raft_failure_tolerance{}").is_some()
    })
    .await;
    assert_eq!(get(&m, "kubectl_vault_credentials_generation{}"), Some(1.0));
    assert_eq!(get(&m, "kubectl_vault_checkpoint_present{}"), Some(0.0));
    let leaders: f64 = pods
        .iter()
        .filter_map(|p| get(&m, &format!("kubectl_vault_pod_leader{{pod={p}}}")))
        .sum();
    assert_eq!(leaders, 1.0, "one active node: {m:#?}");

    // A restarted pod is found sealed and unsealed by the watcher.
    env.cluster.restart_pod(1).await.unwrap();
    scrape_until(&addr, "openbao-1 unsealed by the watcher", |m| {
        get(
            m,
            "kubectl_vault_unseal_attempts_total{pod=openbao-1,result=unsealed}",
        )
        .is_some_and(|v| v >= 1.0)
            && get(m, "kubectl_vault_pod_sealed{pod=openbao-1}") == Some(0.0)
    })
    .await;

    // A rotate killed with its checkpoint written: the checkpoint shows.
    let crashed = env
        .plugin_crashing_at(&["rotate", "--yes"], "rotate::after_checkpoint")
        .await;
    assert_eq!(crashed.code, 101, "the failpoint fired: {crashed:?}");
    let m = scrape_until(&addr, "the waiting checkpoint", |m| {
        get(m, "kubectl_vault_checkpoint_present{}") == Some(1.0)
    })
    .await;
    let updated = get(&m, "kubectl_vault_checkpoint_updated_timestamp_seconds{}")
        .expect("the checkpoint's time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - updated).abs() < 300.0, "{updated} vs {now}");

    // Finished: generation 2, no checkpoint.
    env.plugin(&["rotate", "--yes"]).await.ok();
    scrape_until(&addr, "generation 2 and no checkpoint", |m| {
        get(m, "kubectl_vault_credentials_generation{}") == Some(2.0)
            && get(m, "kubectl_vault_checkpoint_present{}") == Some(0.0)
    })
    .await;
    let pid = watch.id().expect("watch pid").to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let watched = env.finish_spawned(watch).await;
    assert_eq!(watched.code, 0, "{watched:?}");

    // A save posts its outcome; a refused one posts only the attempt.
    let (gateway, pushed) = capture_pushes();
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to, "--pushgateway", &gateway])
        .await
        .ok();
    let refused = env
        .plugin(&[
            "snapshot",
            "save",
            "--to",
            &to,
            "--keep",
            "0",
            "--pushgateway",
            &gateway,
        ])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(pushed.len(), 2, "{pushed:#?}");
    let path = format!(
        "/metrics/job/kubectl_vault_snapshot/instance/{}",
        env.cluster.namespace()
    );
    let (line, body) = &pushed[0];
    assert_eq!(line, &format!("POST {path} HTTP/1.1"));
    let m = parse(body);
    assert_eq!(
        get(&m, "kubectl_vault_snapshot_last_attempt_success{}"),
        Some(1.0)
    );
    let saved = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .unwrap();
    assert_eq!(
        get(&m, "kubectl_vault_snapshot_last_size_bytes{}"),
        Some(std::fs::metadata(saved).unwrap().len() as f64)
    );
    assert!(get(
        &m,
        "kubectl_vault_snapshot_last_success_timestamp_seconds{}"
    )
    .is_some());
    let m = parse(&pushed[1].1);
    assert_eq!(
        get(&m, "kubectl_vault_snapshot_last_attempt_success{}"),
        Some(0.0)
    );
    assert_eq!(
        get(
            &m,
            "kubectl_vault_snapshot_last_success_timestamp_seconds{}"
        ),
        None,
        "a failed attempt keeps the last success's series"
    );
    env.assert_no_secret_exposed().await;
}

pub(crate) type Pushes = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// An HTTP endpoint that answers 200 to everything and keeps each request
/// line and body: what a Pushgateway receives.
pub(crate) fn capture_pushes() -> (String, Pushes) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let pushes: Pushes = Default::default();
    let sink = pushes.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            // Headers, then Content-Length bytes of body.
            let (head, body) = loop {
                let n = conn.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break (String::from_utf8_lossy(&data).into_owned(), String::new());
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_owned(), body.to_owned());
                    }
                }
            };
            let line = head.lines().next().unwrap_or_default().to_owned();
            sink.lock().unwrap().push((line, body));
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, pushes)
}

pub(crate) fn parse(body: &str) -> HashMap<String, f64> {
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition format parses");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("{other:?}"),
            };
            (format!("{}{{}}", s.metric), v)
        })
        .collect()
}
