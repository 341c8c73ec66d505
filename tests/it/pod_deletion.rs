//! Pods that come and go the way the charts' pods do (issue 17): deleted,
//! they are Terminating while the preStop hook sleeps, then gone, then
//! Pending, then Running with a new IP (raft addresses are
//! `<pod>.<sts>-internal` names, as the charts render them); readiness is
//! probed every 5 s with failureThreshold 2. A run that meets a deletion
//! finishes, and every replica ends unsealed, the successor included.

use crate::harness::Env;
use k8s_openapi::api::core::v1::Pod;
use sandbox::ClusterOptions;
use std::time::{Duration, Instant};

fn chart_like() -> ClusterOptions {
    ClusterOptions::openbao()
        .parallel()
        .replicas(3)
        .cluster_dns(true)
}

fn pods(env: &Env, client: kube::Client) -> kube::Api<Pod> {
    kube::Api::namespaced(client, env.cluster.namespace())
}

fn ip_of(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// What a pod object looked like at one poll.
fn state_of(pod: Option<&Pod>) -> &'static str {
    match pod {
        None => "gone",
        Some(p) if p.metadata.deletion_timestamp.is_some() => "Terminating",
        Some(p) => match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") => "Pending",
            Some("Running") => "Running",
            _ => "other",
        },
    }
}

/// Deletes pod `name` as `kubectl delete pod` does, then follows it until
/// its successor runs. Returns the states seen, in order without repeats,
/// the old and the new IP.
pub async fn delete_and_follow(env: &Env, name: &str) -> (Vec<&'static str>, String, String) {
    let api = pods(env, env.client().await);
    let before = api.get(name).await.expect("the pod");
    let old_ip = ip_of(&before).expect("an IP");
    api.delete(name, &Default::default())
        .await
        .expect("delete the pod");
    let mut seen = vec!["Running"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "{name} did not come back: {seen:?}"
        );
        let now = api.get_opt(name).await.expect("get the pod");
        let same = now.as_ref().is_some_and(|p| uid_of(p) == uid_of(&before));
        let state = state_of(now.as_ref());
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        if let Some(p) = now.as_ref().filter(|_| !same && state == "Running") {
            return (seen, old_ip, ip_of(p).expect("a new IP"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_went_the_charts_way(seen: &[&str], old_ip: &str, new_ip: &str) {
    let path: Vec<&str> = seen.iter().copied().filter(|s| *s != "gone").collect();
    assert_eq!(
        path,
        ["Running", "Terminating", "Pending", "Running"],
        "Terminating, then Pending, then Running: {seen:?}"
    );
    assert_ne!(old_ip, new_ip, "the successor has a new IP");
}

#[tokio::test]
async fn a_pod_deleted_mid_unseal_comes_back_with_a_new_ip_and_is_unsealed() {
    let env = Env::start(chart_like()).await;
    env.plugin(&["init", "--yes"]).await.ok();
    env.cluster.restart_all().await.unwrap();
    // The run lists the pods and pauses; pod 1 is deleted meanwhile. It
    // stays Terminating (and answering) for the preStop hook's 5 s, so the
    // pass unseals the old pod; its successor comes up sealed.
    let mut unseal = env.spawn_plugin(
        &["unseal", "-o", "json"],
        &[("FAILPOINTS", "unseal::after_listing_pods=1*sleep(1500)")],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        unseal.try_wait().unwrap().is_none(),
        "the run is still going when the pod is deleted"
    );
    let (seen, old_ip, new_ip) = delete_and_follow(&env, "openbao-1").await;
    let run = env.finish_spawned(unseal).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_went_the_charts_way(&seen, &old_ip, &new_ip);
    let rows = run.json();
    let pods: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pod"].as_str().unwrap())
        .collect();
    assert_eq!(pods.len(), 3, "one row per replica: {rows}");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["error"].is_null()),
        "{rows}"
    );
    for i in 0..3 {
        assert_eq!(env.seal_status(i).await["sealed"], false, "pod {i}");
    }
    env.assert_whole(3).await;
}

#[tokio::test]
async fn a_pod_deleted_mid_init_comes_back_with_a_new_ip_and_init_finishes() {
    let env = Env::start(chart_like()).await;
    // init pauses once the keys are in its checkpoint, before it joins and
    // unseals the followers; pod 2 is deleted then.
    let mut init = env.spawn_plugin(
        &["init", "--yes", "--timeout", "90s"],
        &[("FAILPOINTS", "init::after_clear_copy=sleep(1500)")],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.checkpoint_exists().await {
        assert!(Instant::now() < deadline, "init wrote no checkpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        init.try_wait().unwrap().is_none() && !env.has_stored_credentials().await,
        "init has not finished when the pod is deleted"
    );
    let (seen, old_ip, new_ip) = delete_and_follow(&env, "openbao-2").await;
    let run = env.finish_spawned(init).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_went_the_charts_way(&seen, &old_ip, &new_ip);
    env.assert_whole(3).await;
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    assert_eq!(env.sys_inits(), 1);
    env.assert_no_secret_exposed().await;
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// The charts probe readiness with `vault status` every 5 s, failureThreshold
/// 2: a Ready pod that seals stays Ready through one failed probe. The
/// sandbox used to probe every 200 ms and flip it at once.
#[tokio::test]
async fn readiness_lags_the_server_like_the_charts_probe() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    env.plugin(&["init", "--yes", "--key-shares", "1", "--key-threshold", "1"])
        .await
        .ok();
    let api = pods(&env, env.client().await);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !is_ready(&api.get("openbao-0").await.unwrap()) {
        assert!(Instant::now() < deadline, "an unsealed pod turns Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = env.stored_credentials().await.unwrap()["root_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out) = env.bao(0, Some(&token), &["operator", "seal"], None).await;
    assert_eq!(code, 0, "{out}");
    let sealed_at = Instant::now();
    assert_eq!(env.seal_status(0).await["sealed"], true);
    // One probe at most has seen it sealed within the first 5 s.
    while sealed_at.elapsed() < Duration::from_secs(4) {
        assert!(
            is_ready(&api.get("openbao-0").await.unwrap()),
            "still Ready {:?} after sealing",
            sealed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    while is_ready(&api.get("openbao-0").await.unwrap()) {
        assert!(
            sealed_at.elapsed() < Duration::from_secs(15),
            "NotReady after two failed probes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
