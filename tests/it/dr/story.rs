//! The whole DR story on three OpenBao sandboxes sharing a folder: bad
//! input, sync and scoring by lag at the scale (300 secrets, then
//! 350), a concurrent automatic failover to an unreachable primary's best
//! standby, fencing when it returns, a planned failover that seals a
//! reachable primary, a hand-edited DR state, a crash at each failover step
//! finished by a re-run, and `dr watch`.

use super::{group_file, refused, start, Group, SharedLocation};
use crate::snapshot::{assert_secrets, root_token, write_secrets};
use sandbox::ClusterOptions;
use std::path::Path;
use std::time::Duration;

/// Secrets written before the first sync, and after the second write.
const FIRST: usize = 300;
const ALL: usize = 350;
/// Secrets rewritten before each crash-matrix failover: enough to prove the
/// catch-up restored the newest snapshot, without 350 writes a step.
const STEP: usize = 35;

fn story_file(folder: &Path, north_context: &str) -> String {
    group_file(
        &format!("{}/", folder.display()),
        &[
            ("east", "east", "primary", None),
            ("west", "west", "standby", Some("west")),
            ("north", north_context, "standby", None),
        ],
    )
}

async fn start_story() -> Group {
    let opts = |replicas: u32| ClusterOptions::openbao().parallel().replicas(replicas);
    let g = start(
        vec![
            ("east", opts(1), true),
            // Only west's cluster serves metrics.k8s.io (metrics-server).
            ("west", opts(3).metrics_server(true), true),
            ("north", opts(1), true),
        ],
        SharedLocation::Folder(tempfile::tempdir().unwrap()),
        vec![],
    )
    .await;
    std::fs::write(&g.config, story_file(g.folder(), "north")).unwrap();
    g
}

#[tokio::test]
async fn dr_syncs_scores_fails_over_and_keeps_the_old_primary_fenced() {
    let g = start_story().await;
    let east_token = root_token(g.env("east")).await;
    let state_file = g.folder().join("dr-state.json");

    // Bad input: nothing is created or changed.
    let bad = g.envs[0].home().join("bad.yaml");
    std::fs::write(&bad, story_file(g.folder(), "nowhere")).unwrap();
    let run = g.envs[0]
        .plugin_bare(
            &["dr", "status", "--config", bad.to_str().unwrap()],
            &[("KUBECONFIG", &g.kubeconfig)],
        )
        .await;
    refused(&run, &["context nowhere", "cluster north"]);
    std::fs::write(
        &bad,
        story_file(g.folder(), "north").replace("DRGroup", "Group"),
    )
    .unwrap();
    let run = g.envs[0]
        .plugin_bare(
            &["dr", "sync", "--config", bad.to_str().unwrap()],
            &[("KUBECONFIG", &g.kubeconfig)],
        )
        .await;
    refused(&run, &["kind Group"]);
    refused(&g.dr(&["sync"]).await, &["no snapshot of primary east"]);
    refused(
        &g.dr(&["sync", "--standby", "east"]).await,
        &["east is the primary"],
    );
    refused(
        &g.dr(&["sync", "--standby", "south"]).await,
        &["south is not a cluster"],
    );
    assert!(!state_file.exists(), "a refused command writes no DR state");

    // Sync both standbys from the first snapshot, then only west from a newer one.
    write_secrets(g.env("east"), &east_token, FIRST, "v1").await;
    g.save_snapshot("east").await;
    // A standby whose credentials this run cannot decrypt is refused, named,
    // and left as it was.
    let key = crate::credentials::keygen(g.envs[0].home(), "north");
    let identity = key.file.to_str().unwrap().to_owned();
    g.env("north")
        .plugin(&[
            "credentials",
            "encrypt",
            "--age-recipient",
            &key.recipient,
            "--age-identity",
            &identity,
        ])
        .await
        .ok();
    let encrypted = g
        .env("north")
        .secret_data(&g.env("north").secret_name(), "credentials.json")
        .await;
    let run = g.dr(&["sync", "--standby", "north"]).await;
    refused(&run, &["standby north cannot be synced", "encrypted"]);
    assert_eq!(
        g.env("north")
            .secret_data(&g.env("north").secret_name(), "credentials.json")
            .await,
        encrypted,
        "nothing was changed"
    );
    assert!(g.state()["standbys"].as_object().unwrap().is_empty());
    g.env("north")
        .plugin(&[
            "credentials",
            "decrypt",
            "--yes",
            "--age-identity",
            &identity,
        ])
        .await
        .ok();

    let west_before = g.env("west").stored_credentials().await.unwrap();
    let run = g.dr(&["sync"]).await.ok();
    assert!(run.stdout.contains("Synced standby west"), "{run:?}");
    assert!(run.stdout.contains("Synced standby north"), "{run:?}");
    assert_eq!(
        g.sealed_pods("west").await,
        [true, true, true],
        "a warm standby rests sealed"
    );
    assert_eq!(g.sealed_pods("north").await, [true]);
    let west_creds = g.env("west").stored_credentials().await.unwrap();
    assert_eq!(
        west_creds["root_token"],
        east_token.as_str(),
        "the standby stores the primary's credentials"
    );
    assert!(
        west_creds["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["root_token"] == west_before["root_token"]),
        "its own move into the history"
    );
    assert_eq!(
        g.annotation("west", "kubectl-vault.io/dr-role")
            .await
            .as_deref(),
        Some("standby")
    );
    assert_eq!(
        g.annotation("east", "kubectl-vault.io/dr-role")
            .await
            .as_deref(),
        Some("primary")
    );

    write_secrets(g.env("east"), &east_token, ALL, "v2").await;
    g.save_snapshot("east").await;
    g.dr(&["sync", "--standby", "west"]).await.ok();
    let status = g.dr(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(status["primary"], "east");
    assert_eq!(status["epoch"], 1);
    let cluster = |name: &str| {
        status["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let (west, north) = (cluster("west"), cluster("north"));
    eprintln!("status: {status:#}");
    assert_eq!(west["lag"]["raft_index_behind"], 0, "{west}");
    assert!(
        north["lag"]["raft_index_behind"].as_u64().unwrap() > 0,
        "{north}"
    );
    assert!(
        west["score"].as_u64().unwrap() > north["score"].as_u64().unwrap(),
        "west ranks first by lag"
    );
    assert!(north["score"].as_u64().unwrap() > 0);
    assert_eq!(cluster("east")["health"], 200);
    assert_eq!(west["health"], 503);
    assert_eq!(west["reachable"], true);
    assert!(west["latency_p95_ms"].as_f64().is_some());
    // Pod CPU and memory where metrics.k8s.io is served, summed over the
    // pods; null where it is not (and never an error).
    assert!(west["cpu_millicores"].as_f64().unwrap() > 0.0, "{west}");
    assert!(
        west["memory_bytes"].as_u64().unwrap() > 3 * 10 * 1024 * 1024,
        "three bao servers hold more than 10 MiB each: {west}"
    );
    assert!(north["cpu_millicores"].is_null(), "{north}");
    assert!(north["memory_bytes"].is_null(), "{north}");
    let table = g.dr(&["status"]).await.ok().stdout;
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(table.contains("cpu") && table.contains("memory"), "{table}");
    assert!(
        row("west").iter().any(|c| c.ends_with("Mi") && c != "0Mi"),
        "{table}"
    );
    assert_eq!(row("north")[9..11], ["-", "-"], "{table}");

    // A healthy primary is not failed over automatically.
    refused(
        &g.dr(&["failover", "--to", "auto", "--yes"]).await,
        &["primary east is healthy"],
    );

    // The primary becomes unreachable (its API server stops answering) and
    // its servers restart, sealed, behind that wall. Two automatic
    // failovers at once: exactly one wins, the other names it.
    g.env("east").cluster.set_latency(Duration::from_secs(600));
    g.env("east").cluster.restart_all().await.unwrap();
    let kc = g.kubeconfig.clone();
    let cfg = g.config.to_str().unwrap().to_owned();
    let args = [
        "dr",
        "failover",
        "--to",
        "auto",
        "--yes",
        "--config",
        &cfg,
        "--probe-timeout",
        "1s",
    ];
    let a = g.envs[1].spawn_bare(&args, &[("KUBECONFIG", &kc)]);
    let b = g.envs[2].spawn_bare(&args, &[("KUBECONFIG", &kc)]);
    let (a, b) = tokio::join!(g.envs[1].finish_spawned(a), g.envs[2].finish_spawned(b));
    eprintln!("failover a: {a:?}\nfailover b: {b:?}");
    let (won, lost) = if a.code == 0 { (a, b) } else { (b, a) };
    assert_eq!(won.code, 0, "{won:?}");
    assert!(
        won.stdout.contains("Failed over to west at epoch 2"),
        "{won:?}"
    );
    refused(&lost, &["west"]);
    let state = g.state();
    assert_eq!(state["primary"], "west");
    assert_eq!(state["epoch"], 2);
    assert_eq!(state["fences"]["east"]["how"], "recorded");
    assert_eq!(state["decision"]["chosen"], "west");
    // Every secret reads on west with west's stored credentials.
    let west_token = root_token(g.env("west")).await;
    assert_secrets(g.env("west"), &west_token, ALL, "v2").await;
    assert_eq!(g.sealed_pods("west").await, [false, false, false]);

    // The old primary comes back: sealed, and unseal refuses, naming the
    // epoch and the new primary.
    g.env("east").cluster.set_latency(Duration::ZERO);
    assert_eq!(g.sealed_pods("east").await, [true]);
    let run = g.env("east").plugin(&["unseal"]).await;
    refused(&run, &["epoch 2", "west is the primary", "dr sync"]);
    assert_eq!(g.sealed_pods("east").await, [true], "nothing was unsealed");
    let status = g.dr(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(status["clusters"][0]["role"], "fenced");

    // A hand-edited DR state at an older epoch is refused and changes nothing.
    let kept = std::fs::read(&state_file).unwrap();
    let mut old = g.state();
    old["epoch"] = 1.into();
    std::fs::write(&state_file, old.to_string()).unwrap();
    refused(&g.dr(&["status"]).await, &["rolled back", "epoch 2"]);
    refused(
        &g.dr(&["failover", "--to", "north", "--yes"]).await,
        &["rolled back"],
    );
    assert_eq!(g.state()["epoch"], 1, "nothing was changed");
    std::fs::write(&state_file, kept).unwrap();

    // A planned failover seals a reachable primary and marks it demoted.
    g.save_snapshot("west").await;
    g.dr(&["sync", "--standby", "north"]).await.ok();
    let run = g.dr(&["failover", "--to", "north", "--yes"]).await.ok();
    assert!(run.stdout.contains("every pod sealed"), "{run:?}");
    assert_eq!(
        g.sealed_pods("west").await,
        [true, true, true],
        "the fence sealed every pod"
    );
    assert_eq!(
        g.annotation("west", "kubectl-vault.io/dr-role")
            .await
            .as_deref(),
        Some("demoted")
    );
    refused(
        &g.env("west").plugin(&["unseal"]).await,
        &[
            "epoch 3",
            "north is the primary",
            "--config <the file that defines DR group \"prod\"> --standby west",
        ],
    );
    let north_token = root_token(g.env("north")).await;
    assert_secrets(g.env("north"), &north_token, ALL, "v2").await;

    // A crash after each failover step; the re-run finishes with the same
    // choice and nothing is lost.
    let steps = [
        ("dr::failover_after_epoch", Some("epoch_taken")),
        ("dr::failover_after_fence", Some("fenced")),
        ("dr::failover_after_catch_up", Some("caught_up")),
        ("dr::failover_after_promote", Some("caught_up")),
    ];
    for (i, (failpoint, step)) in steps.into_iter().enumerate() {
        let from = g.state()["primary"].as_str().unwrap().to_owned();
        let to = if from == "west" { "east" } else { "west" };
        let epoch = g.state()["epoch"].as_u64().unwrap();
        g.save_snapshot(&from).await;
        if i == 0 {
            // A sync killed after its restore resumes past it.
            let crashed = g
                .dr_with(
                    &["sync", "--standby", to],
                    &[("FAILPOINTS", "dr::sync_after_restore=panic")],
                )
                .await;
            assert_eq!(crashed.code, 101, "{crashed:?}");
            let checkpoint = g
                .env(to)
                .secret_data(
                    &format!("{}-checkpoint", g.env(to).secret_name()),
                    "checkpoint.json",
                )
                .await
                .expect("the dr sync checkpoint");
            assert!(checkpoint.contains("dr_synced"), "{checkpoint}");
            let rerun = g.dr(&["sync", "--standby", to]).await.ok();
            assert!(rerun.stdout.contains("resumed"), "{rerun:?}");
            assert!(!g.env(to).checkpoint_exists().await);
            assert!(g.sealed_pods(to).await.iter().all(|s| *s));
        } else {
            g.dr(&["sync", "--standby", to]).await.ok();
        }
        // One more write after the synced snapshot: the catch-up restores it.
        let token = root_token(g.env(&from)).await;
        write_secrets(g.env(&from), &token, STEP, &format!("c{i}")).await;
        g.save_snapshot(&from).await;
        let spec = format!("{failpoint}=panic");
        let crashed = g
            .dr_with(&["failover", "--to", to, "--yes"], &[("FAILPOINTS", &spec)])
            .await;
        assert_eq!(
            crashed.code, 101,
            "{failpoint} must kill the run: {crashed:?}"
        );
        let state = g.state();
        assert_eq!(state["failover"]["to"], to, "{failpoint}: {state}");
        assert_eq!(
            state["failover"]["step"].as_str(),
            step,
            "{failpoint}: {state}"
        );
        let rerun = g.dr(&["failover", "--yes"]).await.ok();
        assert!(
            rerun
                .stdout
                .contains(&format!("Failed over to {to} at epoch {}", epoch + 1)),
            "{failpoint}: {rerun:?}"
        );
        let state = g.state();
        assert_eq!(state["primary"], to);
        assert_eq!(state["epoch"], epoch + 1);
        assert!(state.get("failover").is_none());
        let token = root_token(g.env(to)).await;
        assert_secrets(g.env(to), &token, STEP, &format!("c{i}")).await;
        assert!(
            g.sealed_pods(&from).await.iter().all(|s| *s),
            "{failpoint}: {from} fenced"
        );
    }
    // dr watch: the primary stops answering; after 2 failed probes spanning
    // 2 intervals the watcher promotes the synced standby, and its metrics
    // count the failover.
    let from = g.state()["primary"].as_str().unwrap().to_owned();
    let to = if from == "west" { "east" } else { "west" };
    let epoch = g.state()["epoch"].as_u64().unwrap();
    g.save_snapshot(&from).await;
    g.dr(&["sync", "--standby", to]).await.ok();
    let (watcher, addr) = g.start_watch(epoch as f64).await;
    let died = std::time::Instant::now();
    g.env(&from).cluster.set_latency(Duration::from_secs(600));
    while g.state()["primary"] != to || g.state().get("failover").is_some() {
        assert!(
            died.elapsed() < Duration::from_secs(180),
            "the watcher did not fail over: {}",
            g.state()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "dr watch: primary unreachable to {to} promoted in {:?}",
        died.elapsed()
    );
    let metrics = crate::metrics::scrape_until(&addr, "the failover in the metrics", |m| {
        m.get("kubectl_vault_dr_failovers_total{}") == Some(&1.0)
    })
    .await;
    assert_eq!(g.state()["epoch"], epoch + 1);
    assert_eq!(
        metrics.get(&format!("kubectl_vault_dr_cluster_up{{cluster={from}}}")),
        Some(&0.0),
        "{metrics:?}"
    );
    // Pod usage where metrics.k8s.io is served (west), none where not (north).
    assert!(
        metrics
            .get("kubectl_vault_dr_pod_memory_bytes{cluster=west}")
            .is_some_and(|b| *b > 0.0),
        "{metrics:?}"
    );
    assert!(
        !metrics.contains_key("kubectl_vault_dr_pod_memory_bytes{cluster=north}"),
        "{metrics:?}"
    );
    let mut watcher = watcher;
    watcher.start_kill().unwrap();
    let watched = g.envs[0].finish_spawned(watcher).await;
    assert!(
        watched.stderr.contains("the primary failed; failing over"),
        "{watched:?}"
    );
    // The benchmark's breakdown: detection, then each failover step.
    for line in watched.stderr.lines() {
        if line.contains("failing over") || line.contains("failover done") {
            eprintln!("dr watch: {line}");
        }
    }
    g.env(&from).cluster.set_latency(Duration::ZERO);
    let token = root_token(g.env(to)).await;
    assert_secrets(g.env(to), &token, STEP, "c3").await;

    for env in &g.envs {
        env.assert_no_secret_exposed().await;
        assert_eq!(env.sys_inits(), 1, "a failover never initializes anything");
    }
}
