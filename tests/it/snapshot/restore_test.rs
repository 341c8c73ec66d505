//! `snapshot verify --restore-test` against real OpenBao pods: a good
//! snapshot passes (its generation taken from the credentials history), a
//! snapshot whose generation's shares were removed from the history fails,
//! a truncated one fails, one whose manifest names shares that do not open
//! it fails inside the throwaway server, one without room on the data
//! volume is refused before any server starts, and a run killed mid-test
//! leaves nothing behind. In every case the live cluster's pods, data and raft
//! peers are unchanged and no throwaway process or folder is left in a pod.

mod live;
pub(crate) use live::{live, replace_credentials, wait_for_voters};

use super::{init, root_token};
use crate::harness::Env;
use sandbox::ClusterOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The marker in every throwaway folder name, script and process.
const MARKER: &str = "kubectl-vault-restore-test";

/// Processes of this cluster's throwaway servers, supervisors and
/// watchdogs: their command lines name a folder under the cluster's folder.
fn scratch_processes(env: &Env) -> Vec<String> {
    let root = env.cluster.dir().display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(MARKER) && line.contains(&root) {
            found.push(format!("{}: {line}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Throwaway folders left on any pod's data volume.
fn scratch_folders(env: &Env) -> Vec<PathBuf> {
    env.cluster
        .pod_names()
        .iter()
        .flat_map(|pod| {
            let data = env.cluster.dir().join("pods").join(pod).join("data");
            std::fs::read_dir(data)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(MARKER))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits (bounded) until no throwaway process or folder is left.
pub(crate) async fn assert_nothing_left(env: &Env, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let procs = scratch_processes(env);
        let dirs = scratch_folders(env);
        if procs.is_empty() && dirs.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: processes {procs:?}, folders {dirs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Copies `name` (and its manifest) as `new`, through `edit`.
fn variant(
    dir: &Path,
    name: &str,
    new: &str,
    bytes: impl FnOnce(Vec<u8>) -> Vec<u8>,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let data = bytes(std::fs::read(dir.join(name)).unwrap());
    std::fs::write(dir.join(new), data).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    m["snapshot"] = new.into();
    edit(&mut m);
    std::fs::write(dir.join(format!("{new}.json")), m.to_string()).unwrap();
}

fn manifest(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap()
}

/// Drops generation `generation` from the stored credentials' history.
async fn forget_generation(env: &Env, generation: u64) {
    let mut doc = env.stored_credentials().await.expect("stored credentials");
    let history = doc["history"].as_array_mut().expect("history");
    let before = history.len();
    history.retain(|g| g["generation"] != generation);
    assert!(
        history.len() < before,
        "generation {generation} was in the history"
    );
    replace_credentials(env, &doc).await;
}

#[tokio::test]
async fn restore_test_passes_a_good_snapshot_fails_bad_ones_and_never_touches_the_live_cluster() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(2)).await;
    init(&env).await;
    let token = root_token(&env).await;
    env.write_kv(&token, "sentinel", "here").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.snap");
    env.plugin(&["snapshot", "save", "--to", file.to_str().unwrap()])
        .await
        .ok();
    // Generation 1 moves into the history: the test must find its shares there.
    env.plugin(&["rotate", "--yes"]).await.ok();
    let token = root_token(&env).await;
    wait_for_voters(&env, &token).await;
    let before = live(&env, &token).await;
    let from = format!("{}/", dir.path().display());
    let (gateway, pushed) = crate::metrics::capture_pushes();
    let test = |name: &str| {
        [
            "snapshot",
            "verify",
            "--from",
            &from,
            "--snapshot",
            name,
            "--restore-test",
            "-o",
            "json",
        ]
        .map(str::to_owned)
    };
    let run = |args: [String; 9], extra: &'static [&'static str], last: Option<&String>| {
        let env = &env;
        let last = last.cloned();
        async move {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend_from_slice(extra);
            all.extend(last.as_deref());
            env.plugin(&all).await
        }
    };

    // A good snapshot passes: restored, unsealed with generation 1 from the
    // history, the sentinel read with that generation's root token.
    let good = run(
        test("good.snap"),
        &["--sentinel", "kv/sentinel", "-v", "--pushgateway"],
        Some(&gateway),
    )
    .await
    .ok();
    for line in good
        .stderr
        .lines()
        .filter(|l| l.contains("step done") || l.contains("room for the throwaway server"))
    {
        eprintln!("{line}");
    }
    // The room check read the volume's free space with `df` in the pod.
    assert!(
        good.stderr.contains("room for the throwaway server"),
        "{good:?}"
    );
    let out = good.json();
    assert_eq!(out["result"], "passed", "{out}");
    assert_eq!(out["generation"], 1, "{out}");
    assert_eq!(out["sentinel"], "kv/sentinel", "{out}");
    assert_eq!(out["report"]["root_token_valid"], true, "{out}");
    assert_eq!(out["server_removed"], true, "{out}");
    assert_eq!(out["recorded"], true, "{out}");
    let peak = out["memory"]["peak_rss_bytes"].as_u64().expect("memory");
    assert!(peak > 10 << 20, "a bao server uses more than 10 MiB: {out}");
    eprintln!(
        "restore-test passed in {} ms, throwaway server peak RSS {} MiB",
        out["duration_ms"],
        peak >> 20
    );
    assert_eq!(
        manifest(dir.path(), "good.snap")["restore_test"]["result"],
        "passed"
    );
    assert_nothing_left(&env, Duration::from_secs(5)).await;

    // Without a sentinel the stored root token of generation 1 is still
    // checked against the restored data (`auth/token/lookup-self`).
    let bare = run(test("good.snap"), &["-v"], None).await.ok();
    for line in bare.stderr.lines().filter(|l| l.contains("step done")) {
        eprintln!("{line}");
    }
    let out = bare.json();
    assert_eq!(out["result"], "passed", "{out}");
    assert_eq!(out["report"]["root_token_valid"], true, "{out}");
    assert!(out.get("sentinel").is_none(), "{out}");
    assert_nothing_left(&env, Duration::from_secs(5)).await;

    // A sentinel the data lacks fails the test.
    let missing = run(test("good.snap"), &["--sentinel", "kv/not-there"], None).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("kv/not-there"), "{missing:?}");
    assert_nothing_left(&env, Duration::from_secs(5)).await;

    // Its manifest names generation 2, whose shares do not open it: the
    // throwaway server refuses them.
    variant(
        dir.path(),
        "good.snap",
        "mislabeled.snap",
        |b| b,
        |m| {
            m["generation"] = 2.into();
        },
    );
    let mislabeled = run(test("mislabeled.snap"), &["--pushgateway"], Some(&gateway)).await;
    assert_eq!(mislabeled.code, 1, "{mislabeled:?}");
    assert!(
        mislabeled
            .stderr
            .contains("key generation 2, which the manifest names, do not unseal"),
        "{mislabeled:?}"
    );
    assert_eq!(
        manifest(dir.path(), "mislabeled.snap")["restore_test"]["result"],
        "failed"
    );
    assert_nothing_left(&env, Duration::from_secs(5)).await;

    // The Pushgateway got the pass, then the failure, with their times.
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(pushed.len(), 2, "{pushed:#?}");
    let results: Vec<Option<f64>> = pushed
        .iter()
        .map(|(_, body)| {
            let m = crate::metrics::parse(body);
            assert!(
                crate::metrics::get(
                    &m,
                    "kubectl_vault_snapshot_restore_test_timestamp_seconds{}"
                )
                .is_some(),
                "{body}"
            );
            crate::metrics::get(&m, "kubectl_vault_snapshot_restore_test_success{}")
        })
        .collect();
    assert_eq!(results, [Some(1.0), Some(0.0)]);

    // Truncated: refused before any server starts, recorded as failed.
    variant(
        dir.path(),
        "good.snap",
        "truncated.snap",
        |b| b[..b.len() / 2].to_vec(),
        |_| {},
    );
    let truncated = run(test("truncated.snap"), &[], None).await;
    assert_eq!(truncated.code, 1, "{truncated:?}");
    assert!(truncated.stderr.contains("truncated"), "{truncated:?}");
    assert_eq!(
        manifest(dir.path(), "truncated.snap")["restore_test"]["result"],
        "failed"
    );

    // `snapshot list` shows each snapshot's last result.
    let listed = env
        .plugin(&["snapshot", "list", "--from", &from, "-o", "json"])
        .await
        .ok()
        .json();
    let result_of = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["manifest"]["restore_test"]["result"].clone())
    };
    assert_eq!(result_of("good.snap"), Some("failed".into()), "{listed}");
    assert_eq!(
        result_of("truncated.snap"),
        Some("failed".into()),
        "{listed}"
    );
    let table = env
        .plugin(&["snapshot", "list", "--from", &from])
        .await
        .ok();
    assert!(table.stdout.contains("RESTORE TEST"), "{table:?}");

    // A plugin killed mid-test: the throwaway server and its folder go
    // away by themselves (the watchdog outlives the exec's process group).
    let mut child = env.spawn_plugin(
        &[
            "snapshot",
            "verify",
            "--from",
            &from,
            "--snapshot",
            "good.snap",
            "--restore-test",
        ],
        &[],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let seen = loop {
        let procs = scratch_processes(&env);
        if procs.iter().any(|p| p.contains("server -config")) {
            break procs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the throwaway server never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!scratch_folders(&env).is_empty(), "{seen:?}");
    child.start_kill().expect("kill the plugin");
    let killed = env.finish_spawned(child).await;
    assert_ne!(killed.code, 0, "{killed:?}");
    assert_nothing_left(&env, Duration::from_secs(20)).await;

    // No room on the data volume (its free space read by `df` in the pod,
    // then shrunk to 1 MiB by a failpoint): refused before any throwaway
    // server starts, naming the pod and the volume; recorded as an error.
    let args = test("good.snap");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cramped = env
        .plugin_with_env(
            &args,
            &[("FAILPOINTS", "restore_test::free_bytes=return(1048576)")],
        )
        .await;
    assert_eq!(cramped.code, 1, "{cramped:?}");
    for says in [
        "could not start: the data volume /",
        "of pod openbao-",
        "has 1 MiB free",
        "nothing was started",
    ] {
        assert!(cramped.stderr.contains(says), "{says}: {cramped:?}");
    }
    assert!(
        !cramped.stderr.contains("throwaway server started"),
        "{cramped:?}"
    );
    let recorded = manifest(dir.path(), "good.snap")["restore_test"].clone();
    assert_eq!(recorded["result"], "error", "{recorded}");
    assert!(
        recorded["reason"]
            .as_str()
            .is_some_and(|r| r.contains("1 MiB free")),
        "{recorded}"
    );
    assert_nothing_left(&env, Duration::from_secs(5)).await;

    // Every stored root token replaced by one the live cluster issued after
    // the snapshot: the shares still open the restored data, but no stored
    // token is valid in it, so a restore could not be finished: it fails.
    let stored = env.stored_credentials().await.expect("stored credentials");
    let leader = env.active_ordinal().await;
    let (code, issued) = env
        .bao(
            leader,
            Some(&token),
            &["token", "create", "-policy=root", "-format=json"],
            None,
        )
        .await;
    assert_eq!(code, 0, "{issued}");
    let later: serde_json::Value = serde_json::from_str(&issued).unwrap();
    let mut doc = stored.clone();
    doc["root_token"] = later["auth"]["client_token"].clone();
    for g in doc["history"].as_array_mut().expect("history") {
        if g.get("root_token").is_some() {
            g["root_token"] = later["auth"]["client_token"].clone();
        }
    }
    replace_credentials(&env, &doc).await;
    let strange = run(test("good.snap"), &[], None).await;
    assert_eq!(strange.code, 1, "{strange:?}");
    assert!(
        strange.stderr.contains(
            "no stored root token of key generation 1 answers auth/token/lookup-self in the restored data"
        ),
        "{strange:?}"
    );
    assert_eq!(
        manifest(dir.path(), "good.snap")["restore_test"]["result"],
        "failed"
    );
    replace_credentials(&env, &stored).await;
    assert_nothing_left(&env, Duration::from_secs(5)).await;

    // The generation's shares removed from the history: a clear refusal.
    forget_generation(&env, 1).await;
    let forgotten = run(test("good.snap"), &[], None).await;
    assert_eq!(forgotten.code, 1, "{forgotten:?}");
    assert!(
        forgotten.stderr.contains("needs key generation 1")
            && forgotten.stderr.contains("no longer holds it"),
        "{forgotten:?}"
    );
    assert_eq!(
        manifest(dir.path(), "good.snap")["restore_test"]["result"],
        "failed"
    );

    assert_nothing_left(&env, Duration::from_secs(5)).await;
    assert_eq!(live(&env, &token).await, before, "the live cluster changed");
    env.assert_no_secret_exposed().await;
}
