//! `unseal --watch --metrics-addr` serves Prometheus metrics that follow the
//! cluster: parsed with a text-format parser after a pod restart (sealed,
//! then unsealed by the watcher), a rotate killed with its checkpoint
//! waiting, and the rotate finished.

use crate::harness::Env;
use sandbox::ClusterOptions;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One scrape: `name{labels}` (labels sorted) to value.
fn scrape(addr: &str) -> Option<HashMap<String, f64>> {
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
async fn scrape_until(
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

fn get(m: &HashMap<String, f64>, key: &str) -> Option<f64> {
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
    env.assert_no_secret_exposed().await;
}
