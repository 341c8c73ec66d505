//! `migrate --to raft` (issue 11): a standalone server on file storage
//! becomes a 3-voter raft cluster with the same keys and every secret, and
//! the risk table's guards refuse without changing anything.

use crate::harness::{Env, Run};
use sandbox::{ClusterOptions, Reconfigure, Storage};
use std::path::Path;
use std::time::Instant;

const SECRETS: usize = 500;
const PASSWORD: &str = "migrate-test-password";

fn must(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

/// Runs `curl` once with a config file of many requests (keep-alive), so
/// that 500 writes take about a second. The token is in the config file,
/// the test's own client, never on a command line.
fn curl_many(dir: &Path, requests: &str) -> String {
    let cfg = dir.join("curl.cfg");
    std::fs::write(&cfg, requests).unwrap();
    let out = std::process::Command::new("curl")
        .arg("-K")
        .arg(&cfg)
        .output()
        .expect("run curl");
    let _ = std::fs::remove_file(&cfg);
    assert!(
        out.status.success(),
        "curl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One curl config block per request, separated by `next`; every block
/// repeats the options, which `next` resets.
fn blocks(requests: impl Iterator<Item = String>) -> String {
    requests
        .map(|r| format!("silent\nshow-error\nfail-with-body\n{r}"))
        .collect::<Vec<_>>()
        .join("next\n")
}

fn write_secrets(env: &Env, addr: &str, token: &str) {
    let cfg = blocks((0..SECRETS).map(|i| {
        format!(
            "url = \"{addr}/v1/kv/s{i}\"\nrequest = \"POST\"\nheader = \"X-Vault-Token: {token}\"\ndata = \"{{\\\"value\\\":\\\"v{i}\\\"}}\"\n"
        )
    }));
    curl_many(env.home(), &cfg);
}

/// Reads every secret through `addr`; returns how many hold their value.
fn count_secrets(env: &Env, addr: &str, token: &str) -> usize {
    let cfg = blocks((0..SECRETS).map(|i| {
        format!(
            "url = \"{addr}/v1/kv/s{i}\"\nheader = \"X-Vault-Token: {token}\"\nwrite-out = \"\\n\"\n"
        )
    }));
    let out = curl_many(env.home(), &cfg);
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .enumerate()
        .filter(|(i, v)| v["data"]["value"] == format!("v{i}").as_str())
        .count()
}

/// A policy that reads kv, a userpass user holding it.
async fn add_policy_and_login(env: &Env, token: &str) {
    let policy = r#"path "kv/*" { capabilities = ["read"] }"#;
    let (code, out) = env
        .bao(
            0,
            Some(token),
            &["policy", "write", "kv-reader", "-"],
            Some(policy),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = env
        .bao(0, Some(token), &["auth", "enable", "userpass"], None)
        .await;
    assert_eq!(code, 0, "{out}");
    let user = format!(r#"{{"password":"{PASSWORD}","token_policies":"kv-reader"}}"#);
    let (code, out) = env
        .bao(
            0,
            Some(token),
            &["write", "auth/userpass/users/alice", "-"],
            Some(&user),
        )
        .await;
    assert_eq!(code, 0, "{out}");
}

/// Logs in as alice through pod `ordinal`: her token reads kv and may not write it.
async fn login_works(env: &Env, ordinal: u32) {
    let body = format!(r#"{{"password":"{PASSWORD}"}}"#);
    let (code, out) = env
        .bao(
            ordinal,
            None,
            &["write", "-format=json", "auth/userpass/login/alice", "-"],
            Some(&body),
        )
        .await;
    assert_eq!(code, 0, "login through pod {ordinal}: {out}");
    let login: serde_json::Value = serde_json::from_str(&out).unwrap();
    let user_token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let (code, out) = env
        .bao(
            ordinal,
            Some(&user_token),
            &["read", "-field=value", "kv/s7"],
            None,
        )
        .await;
    assert_eq!(
        (code, out.trim()),
        (0, "v7"),
        "policy reads through {ordinal}"
    );
    let (code, _) = env
        .bao(
            ordinal,
            Some(&user_token),
            &["write", "kv/s7", "value=x"],
            None,
        )
        .await;
    assert_ne!(code, 0, "the policy denies writes");
}

/// `sys/init` in exec commands the API server saw (its audit log).
fn init_execs(env: &Env) -> usize {
    std::fs::read_to_string(env.cluster.audit_log_path())
        .unwrap_or_default()
        .matches("sys%2Finit")
        .count()
}

async fn standalone_with_data(opts: ClusterOptions) -> (Env, String) {
    let env = Env::start(opts.standalone().cluster_dns(true)).await;
    must(&env.plugin(&["init", "--yes", "--timeout", "30s"]).await, 0);
    let creds = env.stored_credentials().await.expect("credentials stored");
    let token = creds["root_token"].as_str().unwrap().to_owned();
    let (code, out) = env
        .bao(
            0,
            Some(&token),
            &["secrets", "enable", "-path=kv", "kv"],
            None,
        )
        .await;
    assert_eq!(code, 0, "{out}");
    (env, token)
}

/// Phase 2 by a re-run of `migrate`, or by the post-upgrade hook (`via_hook`).
async fn end_to_end(opts: ClusterOptions, via_hook: bool) {
    let (env, token) = standalone_with_data(opts).await;
    let addr0 = env.cluster.pod_api_addr(0);
    let started = Instant::now();
    write_secrets(&env, &addr0, &token);
    eprintln!("{SECRETS} secrets written in {:?}", started.elapsed());
    add_policy_and_login(&env, &token).await;
    let stored_before = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .unwrap();
    let inits_before = init_execs(&env);
    let backups = env.cluster.dir().join("backups");
    let backup_to = format!("{}/", backups.display());

    // Guards: refused, nothing changed.
    let even = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--replicas",
            "2",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await;
    must(&even, 1);
    assert!(
        even.stderr.contains("even number of raft voters"),
        "{}",
        even.stderr
    );
    let no_backup = env.plugin(&["migrate", "--to", "raft", "--yes"]).await;
    must(&no_backup, 1);
    assert!(
        no_backup.stderr.contains("--backup-to"),
        "{}",
        no_backup.stderr
    );
    assert!(!env.checkpoint_exists().await);
    assert!(!backups.exists(), "no backup was taken by a refused run");

    // Phase 1.
    let started = Instant::now();
    let phase1 = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await;
    must(&phase1, 0);
    eprintln!("phase 1 took {:?}", started.elapsed());
    assert!(
        phase1.stdout.contains("awaiting_raft_values"),
        "{}",
        phase1.stdout
    );
    assert!(
        phase1.stdout.contains("setNodeId: true"),
        "{}",
        phase1.stdout
    );
    assert!(phase1.stdout.contains("8201"), "{}", phase1.stdout);
    let backup_files: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        backup_files.len(),
        2,
        "backup and manifest: {backup_files:?}"
    );
    assert!(env.checkpoint_exists().await);
    let s = env.seal_status(0).await;
    assert_eq!(
        (s["sealed"].clone(), s["storage_type"].clone()),
        (false.into(), "file".into()),
        "{s}"
    );
    // A re-run before the values are applied only prints them again.
    let again = env.plugin(&["migrate", "--to", "raft"]).await;
    must(&again, 0);
    assert!(again.stdout.contains("retry_join"), "{}", again.stdout);

    // Guard: init while the migrate is pending.
    let init = env.plugin(&["init", "--yes", "--timeout", "20s"]).await;
    must(&init, 1);
    assert!(init.stderr.contains("migrate"), "{}", init.stderr);

    // Phase 2 by `--wait`, started before the values are applied: it
    // watches for raft pods, and finishes.
    let waiting = (!via_hook).then(|| {
        env.spawn_plugin(
            &[
                "migrate",
                "--to",
                "raft",
                "--wait",
                "5m",
                "--timeout",
                "120s",
            ],
            &[],
        )
    });
    // `helm upgrade` with the raft values, then phase 2.
    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    match waiting {
        None => {
            let hook = env.plugin(&["hook", "--timeout", "120s"]).await;
            must(&hook, 0);
        }
        Some(child) => {
            let phase2 = env.finish_spawned(child).await;
            must(&phase2, 0);
            assert!(phase2.stdout.contains("3 voters"), "{}", phase2.stdout);
        }
    }
    eprintln!("phase 2 took {:?}", started.elapsed());
    assert!(!env.checkpoint_exists().await, "checkpoint deleted");
    env.assert_whole(3).await;

    // Every secret, the policy and the login; through every pod.
    let leader = env.active_ordinal().await;
    assert_eq!(
        count_secrets(&env, &env.cluster.pod_api_addr(leader), &token),
        SECRETS
    );
    for ordinal in 0..3 {
        assert_eq!(env.read_kv(&token, "s499").await, "v499");
        login_works(&env, ordinal).await;
    }
    assert_eq!(
        env.secret_data(&env.secret_name(), "credentials.json")
            .await
            .unwrap(),
        stored_before,
        "the stored credentials are byte-identical"
    );
    assert_eq!(env.sys_inits(), 1, "one sys/init ever, before the migrate");
    assert_eq!(init_execs(&env), inits_before, "no sys/init exec since");

    // Nothing lost across a full restart with the stored keys.
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    assert_eq!(
        count_secrets(
            &env,
            &env.cluster.pod_api_addr(env.active_ordinal().await),
            &token
        ),
        SECRETS
    );
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn migrate_moves_a_standalone_openbao_with_500_secrets_to_three_raft_voters() {
    end_to_end(ClusterOptions::openbao(), false).await;
}

/// The raft values applied with no migrate: raft pods come up empty while
/// the file data sits on pod 0's volume. Detected, init refused, way back said.
#[tokio::test]
async fn migrate_refuses_raft_values_applied_before_the_copy_and_names_the_way_back() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao().parallel()).await;
    env.write_kv(&token, "probe", "kept").await;
    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());
    let run = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await;
    must(&run, 1);
    assert!(
        run.stderr.contains("applied without a migrate"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("re-apply the standalone values"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Do not run `kubectl vault init`"),
        "{}",
        run.stderr
    );
    let init = env.plugin(&["init", "--yes", "--timeout", "20s"]).await;
    must(&init, 1);
    assert_eq!(
        env.seal_status(0).await["initialized"],
        false,
        "nothing initialized"
    );
    assert_eq!(env.sys_inits(), 1);
    assert!(!env.checkpoint_exists().await);

    // The way back works: standalone values again, the data is there.
    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::File),
            replicas: Some(1),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    must(&env.plugin(&["unseal", "--timeout", "30s"]).await, 0);
    assert_eq!(env.read_kv(&token, "probe").await, "kept");
    env.assert_no_secret_exposed().await;
}

/// Runs `args` with `failpoint` set to panic; proves it fired.
async fn crash_at(env: &Env, args: &[&str], failpoint: &str) {
    let crashed = env.plugin_crashing_at(args, failpoint).await;
    assert_eq!(
        crashed.code, 101,
        "{failpoint} must kill the run: {crashed:?}"
    );
    assert!(
        crashed.stderr.contains(failpoint),
        "the panic names {failpoint}: {}",
        crashed.stderr
    );
}

/// Kills at every phase boundary, and once while `operator migrate` runs
/// in the pod; each re-run finishes. Nothing is lost: after a full restart
/// the stored keys unseal every pod and the data reads back.
#[tokio::test]
async fn migrate_killed_at_every_phase_boundary_and_during_the_copy_finishes_on_rerun() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao().parallel()).await;
    write_secrets(&env, &env.cluster.pod_api_addr(0), &token);
    let stored_before = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .unwrap();
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());
    let phase1 = [
        "migrate",
        "--to",
        "raft",
        "--backup-to",
        &backup_to,
        "--yes",
    ];

    // Killed during the copy: the in-pod `operator migrate` dies with the
    // exec (the sandbox kills its process group when the client vanishes).
    let child = env.spawn_plugin(&phase1, &[]);
    let raft_db = env.cluster.dir().join("pods/openbao-0/data/raft/raft.db");
    let started = Instant::now();
    while !raft_db.exists() {
        assert!(started.elapsed().as_secs() < 60, "the copy never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(child); // kill_on_drop: SIGKILL
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(env.checkpoint_exists().await, "migrate_pending was written");
    assert_eq!(
        env.seal_status(0).await["sealed"],
        true,
        "killed while sealed"
    );

    for failpoint in [
        "migrate::before_seal",
        "migrate::before_copy",
        "migrate::after_copy",
    ] {
        crash_at(&env, &phase1, failpoint).await;
    }
    crash_at(&env, &phase1, "migrate::awaiting_raft_values").await;
    let rerun = env.plugin(&phase1).await;
    must(&rerun, 0);
    assert!(rerun.stdout.contains("Phase 1 is done"), "{}", rerun.stdout);
    assert_eq!(env.seal_status(0).await["sealed"], false);

    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let phase2 = ["migrate", "--to", "raft", "--timeout", "120s"];
    for failpoint in [
        "migrate::before_reconcile",
        "migrate::after_reconcile",
        "migrate::before_delete_checkpoint",
    ] {
        crash_at(&env, &phase2, failpoint).await;
        assert!(
            env.checkpoint_exists().await,
            "{failpoint}: checkpoint kept"
        );
    }
    must(&env.plugin(&phase2).await, 0);
    assert!(!env.checkpoint_exists().await);
    env.assert_whole(3).await;

    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    let leader = env.active_ordinal().await;
    assert_eq!(
        count_secrets(&env, &env.cluster.pod_api_addr(leader), &token),
        SECRETS
    );
    assert_eq!(
        env.secret_data(&env.secret_name(), "credentials.json")
            .await
            .unwrap(),
        stored_before
    );
    assert_eq!(env.sys_inits(), 1);
    env.assert_no_secret_exposed().await;
}

/// The image upgraded to 2.7 before the migrate: the pod crash-loops on
/// `unknown storage type file`. `status` and `migrate` say to pin the image
/// back to 2.6.x; once it is, the data is all there.
#[tokio::test]
async fn an_upgraded_image_refusing_file_storage_is_recognised_and_pinning_back_keeps_the_data() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao()).await;
    env.write_kv(&token, "probe", "intact").await;
    env.cluster
        .reconfigure(Reconfigure {
            version: Some("2.7.2".into()),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let log = env.cluster.dir().join("pods/openbao-0/server.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("unknown storage type file"),
        "the 2.7 server refused file storage"
    );
    let status = env.plugin(&["status", "-o", "json"]).await.json();
    let next = status["next"].as_str().unwrap_or_default().to_owned();
    assert!(next.contains("Pin the image back to 2.6.x"), "{status}");
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());
    let run = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await;
    must(&run, 1);
    assert!(
        run.stderr.contains("Pin the image back to 2.6.x"),
        "{}",
        run.stderr
    );
    assert!(!env.checkpoint_exists().await);

    env.cluster
        .reconfigure(Reconfigure {
            version: Some("2.6.2".into()),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    must(&env.plugin(&["unseal", "--timeout", "30s"]).await, 0);
    assert_eq!(env.read_kv(&token, "probe").await, "intact");
    env.assert_no_secret_exposed().await;
}

/// A one-node raft cluster growing to 3 is phase 2 without the copy. Before
/// it, `unseal` refuses the followers that have not joined (unsealing one
/// first is a risk of the runbook) and changes nothing.
#[tokio::test]
async fn a_one_node_raft_cluster_grows_to_three_voters_and_unjoined_followers_are_not_unsealed() {
    let env = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(1)
            .cluster_dns(true),
    )
    .await;
    must(&env.plugin(&["init", "--yes", "--timeout", "30s"]).await, 0);
    let token = env.stored_credentials().await.unwrap()["root_token"]
        .as_str()
        .unwrap()
        .to_owned();
    env.write_kv(&token, "probe", "grown").await;
    env.cluster
        .reconfigure(Reconfigure {
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    env.cluster
        .wait_for_pods(3, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let unseal = env.plugin(&["unseal", "--timeout", "20s"]).await;
    must(&unseal, 1);
    assert!(unseal.stderr.contains("join"), "{}", unseal.stderr);
    for ordinal in [1, 2] {
        assert_eq!(
            env.seal_status(ordinal).await["initialized"],
            false,
            "pod {ordinal} untouched"
        );
    }
    let even = env
        .plugin(&["migrate", "--to", "raft", "--replicas", "4"])
        .await;
    must(&even, 1);
    let grow = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--replicas",
            "3",
            "--timeout",
            "120s",
        ])
        .await;
    must(&grow, 0);
    assert!(grow.stdout.contains("3 voters"), "{}", grow.stdout);
    env.assert_whole(3).await;
    assert_eq!(env.read_kv(&token, "probe").await, "grown");
    assert_eq!(env.sys_inits(), 1);
    env.assert_no_secret_exposed().await;
}

/// Phase 2 here is the post-upgrade hook, which finishes a pending migrate.
#[tokio::test]
async fn migrate_moves_a_standalone_vault_with_500_secrets_to_three_raft_voters_finished_by_the_hook(
) {
    end_to_end(ClusterOptions::vault(), true).await;
}

/// A follower whose raft port 8201 the leader cannot reach: the join is
/// timed and ends with exit 1 and a hint naming 8200 and 8201, not a hang.
#[tokio::test]
async fn a_follower_the_leader_cannot_reach_on_8201_ends_in_a_timed_refusal_naming_the_ports() {
    let env = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(1)
            .cluster_dns(true),
    )
    .await;
    must(&env.plugin(&["init", "--yes", "--timeout", "30s"]).await, 0);
    env.cluster
        .reconfigure(Reconfigure {
            replicas: Some(3),
            blocked_cluster_ports: Some(vec![1]),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let config =
        std::fs::read_to_string(env.cluster.dir().join("pods/openbao-1/config.hcl")).unwrap();
    assert!(config.contains(":18201"), "the fault is in place: {config}");
    env.cluster
        .wait_for_pods(3, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let started = Instant::now();
    let run = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--replicas",
            "3",
            "--timeout",
            "30s",
        ])
        .await;
    must(&run, 1);
    assert!(started.elapsed().as_secs() < 150, "timed, not a hang");
    assert!(run.stderr.contains("openbao-1"), "{}", run.stderr);
    assert!(
        run.stderr.contains("8200") && run.stderr.contains("8201"),
        "{}",
        run.stderr
    );
    env.assert_no_secret_exposed().await;
}

/// `--rollback` before phase 2: refused while the raft values are applied
/// (it says to re-apply the standalone values); with them back, the pod
/// unseals on its untouched file data and the checkpoint goes.
#[tokio::test]
async fn rollback_after_phase_one_brings_the_file_storage_back() {
    let (env, token) = standalone_with_data(ClusterOptions::openbao().parallel()).await;
    env.write_kv(&token, "probe", "before").await;
    let backup_to = format!("{}/", env.cluster.dir().join("backups").display());

    // Guard: no room on the data volume for the raft copy (injected; the
    // refusal proves it fired): exit 1, nothing changed in the cluster. (The
    // backup is taken before this check, into its own folder here.)
    let refused_to = format!("{}/", env.cluster.dir().join("refused").display());
    let full = env
        .plugin_with_env(
            &[
                "migrate",
                "--to",
                "raft",
                "--backup-to",
                &refused_to,
                "--yes",
            ],
            &[("FAILPOINTS", "migrate::volume_full=return")],
        )
        .await;
    must(&full, 1);
    assert!(
        full.stderr.contains("KiB free") && full.stderr.contains("grow the volume first"),
        "{}",
        full.stderr
    );
    assert!(!env.checkpoint_exists().await, "no checkpoint");
    let s = env.seal_status(0).await;
    assert_eq!(
        (s["sealed"].clone(), s["storage_type"].clone()),
        (false.into(), "file".into()),
        "the pod still serves its file storage: {s}"
    );

    must(
        &env.plugin(&[
            "migrate",
            "--to",
            "raft",
            "--backup-to",
            &backup_to,
            "--yes",
        ])
        .await,
        0,
    );
    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let early = env.plugin(&["migrate", "--rollback", "--yes"]).await;
    must(&early, 1);
    assert!(
        early.stderr.contains("re-apply the standalone values"),
        "{}",
        early.stderr
    );
    assert!(env.checkpoint_exists().await, "nothing changed");

    env.cluster
        .reconfigure(Reconfigure {
            storage: Some(Storage::File),
            replicas: Some(1),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let back = env.plugin(&["migrate", "--rollback", "--yes"]).await;
    must(&back, 0);
    assert!(back.stdout.contains("Rolled back"), "{}", back.stdout);
    assert!(!env.checkpoint_exists().await);
    assert_eq!(env.seal_status(0).await["storage_type"], "file");
    assert_eq!(env.read_kv(&token, "probe").await, "before");
    env.assert_no_secret_exposed().await;
}
