//! `init` interrupted: killed at random moments (before, during and after
//! `sys/init`) and re-run, killed after `sys/init` with pod 0 deleted
//! afterwards, and facing a replica that does not answer. The keys are
//! never lost, and nothing is initialized twice.

use crate::harness::Env;
use rand::{Rng, SeedableRng};
use sandbox::ClusterOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const INIT_COPY: &str = ".kubectl-vault-init.json";

fn answer_file(env: &Env, ordinal: u32) -> PathBuf {
    env.cluster
        .dir()
        .join("pods")
        .join(&env.cluster.pod_names()[ordinal as usize])
        .join("data")
        .join(INIT_COPY)
}

fn audit_has_sys_init_launch(env: &Env) -> bool {
    std::fs::read_to_string(env.cluster.audit_log_path())
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("/exec") && l.contains("sys/init"))
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The keys exist in the cluster but in no Secret: only the pod's copy has them.
async fn keys_only_in_the_pod(env: &Env) -> bool {
    env.seal_status(0).await["initialized"] == true
        && env.stored_credentials().await.is_none()
        && env
            .secret_data(
                &format!("{}-checkpoint", env.secret_name()),
                "checkpoint.json",
            )
            .await
            .is_none_or(|c| !c.contains("init_keys_stored"))
}

/// How a trial picks its moment.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// After the `sys/init` process answered, before the plugin stored it
    /// (the plugin is held by a sleep failpoint, so the window is certain).
    AnswerOnlyInThePod,
    /// A random delay after the `sys/init` launch reached the API server.
    AfterLaunch(u64),
    /// A random delay after the run started.
    AfterStart(u64),
}

/// SIGKILLs `init` at many moments, each on a fresh cluster, and re-runs it.
/// `INIT_KILL_TRIALS` sets the count (CI runs the default; the note of the
/// change that added this reports a longer run).
#[tokio::test]
async fn init_killed_at_random_moments_never_loses_the_keys() {
    let trials: usize = std::env::var("INIT_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("INIT_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    // Trials run in lanes, each on its own clusters: most of a trial is
    // waiting (elections, the dead run's Lease), so lanes share the cores.
    let lanes: usize = std::env::var("INIT_KILL_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    eprintln!(
        "init kill trials: {trials} in {lanes} lanes, seed {seed} (INIT_KILL_SEED reproduces)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let moments: Vec<Moment> = (0..trials)
        .map(|trial| match trial % 3 {
            0 if trial == 0 => Moment::AnswerOnlyInThePod,
            1 | 0 => Moment::AfterLaunch(rng.random_range(0..1500)),
            // From the very start, so some kills land before sys/init.
            _ => Moment::AfterStart(rng.random_range(0..2500)),
        })
        .collect();
    let only_in_pod: usize = futures::future::join_all((0..lanes).map(|lane| {
        let mine: Vec<(usize, Moment)> = moments
            .iter()
            .copied()
            .enumerate()
            .filter(|(trial, _)| trial % lanes == lane)
            .collect();
        async move {
            let mut hits = 0;
            for (trial, moment) in mine {
                hits += usize::from(init_kill_trial(trial, moment).await);
            }
            hits
        }
    }))
    .await
    .into_iter()
    .sum();
    eprintln!("init kill trials: {trials} passed; {only_in_pod} killed while the keys were only in the pod");
    assert!(
        only_in_pod >= 1,
        "no trial hit the window where the keys exist only in the pod"
    );
}

/// One trial on a fresh cluster: kill `init` at `moment`, re-run it, prove
/// nothing was lost. Returns whether the kill landed while the keys existed
/// only in the pod.
async fn init_kill_trial(trial: usize, moment: Moment) -> bool {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let failpoints = match moment {
        Moment::AnswerOnlyInThePod => "init::sys_init_launched=sleep(5000)",
        _ => "",
    };
    let mut child = env.spawn_plugin(&["init", "--yes"], &[("FAILPOINTS", failpoints)]);
    match moment {
        Moment::AnswerOnlyInThePod => {
            let file = answer_file(&env, 0);
            wait_for("the sys/init answer", Duration::from_secs(60), || {
                file.exists()
            })
            .await;
        }
        Moment::AfterLaunch(ms) => {
            wait_for("the sys/init launch", Duration::from_secs(60), || {
                audit_has_sys_init_launch(&env)
            })
            .await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Moment::AfterStart(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
    }
    let still_running = child.try_wait().expect("try_wait").is_none();
    child.start_kill().expect("SIGKILL init");
    let killed = env.finish_spawned(child).await;
    if matches!(moment, Moment::AnswerOnlyInThePod) {
        assert!(
            still_running,
            "the held run must be killed mid-way: {killed:?}"
        );
    }
    let window = keys_only_in_the_pod(&env).await;
    eprintln!(
        "trial {trial}: {moment:?}, killed while running: {still_running}, sys/init launched: {}, keys only in the pod: {window}",
        audit_has_sys_init_launch(&env)
    );

    let rerun = env
        .plugin(&["init", "--yes", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(rerun["result"].is_string(), "{rerun}");
    env.assert_whole(3).await;
    assert!(!env.checkpoint_exists().await, "checkpoint deleted");
    assert_eq!(
        env.sys_inits(),
        1,
        "trial {trial}: exactly one sys/init took"
    );
    assert!(!answer_file(&env, 0).exists(), "the pod's copy is removed");
    if window || trial.is_multiple_of(3) {
        let creds = env.stored_credentials().await.unwrap();
        let token = creds["root_token"].as_str().unwrap().to_owned();
        env.write_kv(&token, "probe", "kept").await;
        env.restart_all_and_unseal().await;
        env.assert_whole(3).await;
        assert_eq!(env.read_kv(&token, "probe").await, "kept");
    }
    env.assert_no_secret_exposed().await;
    window
}

/// The copy of the `sys/init` answer survives what the charts' pods survive:
/// a pod deletion empties HOME and /tmp, the data volume stays.
#[tokio::test]
async fn init_killed_after_sys_init_then_pod_0_deleted_recovers_the_keys() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let crashed = env
        .plugin_crashing_at(&["init", "--yes"], "init::after_sys_init")
        .await;
    assert_ne!(crashed.code, 0, "{crashed:?}");
    assert!(
        keys_only_in_the_pod(&env).await,
        "the failpoint fired after sys/init"
    );
    crate::pod_deletion::delete_and_follow(&env, "openbao-0").await;
    let home = env
        .cluster
        .dir()
        .join("pods")
        .join("openbao-0")
        .join("home");
    assert_eq!(
        std::fs::read_dir(&home).map(|d| d.count()).unwrap_or(0),
        0,
        "the deleted pod's HOME is empty"
    );
    let resumed = env
        .plugin(&["init", "--yes", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(resumed["result"], "resumed", "{resumed}");
    env.assert_whole(3).await;
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    assert_eq!(env.sys_inits(), 1);
    env.assert_no_secret_exposed().await;
}

/// `init` never picks "the first running pod": with pod 0 gone and pods 1
/// and 2 running, it waits for pod 0 and calls nothing.
#[tokio::test]
async fn init_decides_fresh_only_when_every_replica_answers() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    // Pod 0, where sys/init goes, is missing: nothing else is initialized.
    env.cluster.remove_pod(0).await.expect("remove pod 0");
    let refused = env.plugin(&["init", "--yes", "--timeout", "3s"]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("openbao-0"), "{refused:?}");
    assert!(!audit_has_sys_init_launch(&env), "no sys/init was sent");
    assert_eq!(env.sys_inits(), 0);
    env.cluster.restore_pod(0).await.expect("pod 0 back");
    env.cluster
        .wait_for_pods(3, Duration::from_secs(60))
        .await
        .unwrap();
    // Pod 0 answers but pod 2 does not: its volume may hold the data (or a
    // lost sys/init answer), so the cluster is not known to be fresh.
    env.cluster.remove_pod(2).await.expect("remove pod 2");
    let refused = env.plugin(&["init", "--yes", "--timeout", "3s"]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("openbao-2"), "{refused:?}");
    assert!(!audit_has_sys_init_launch(&env), "no sys/init was sent");
    assert!(!env.checkpoint_exists().await, "nothing was written");
    env.cluster.restore_pod(2).await.expect("pod 2 back");
    env.cluster
        .wait_for_pods(3, Duration::from_secs(60))
        .await
        .unwrap();
    env.plugin(&["init", "--yes"]).await.ok();
    env.assert_whole(3).await;
    assert_eq!(env.sys_inits(), 1);
}
