//! `migrate --to raft` (issue 11): a standalone server on file storage
//! becomes a 3-voter raft cluster with the same keys and every secret, and
//! the risk table's guards refuse without changing anything.
//!
//! Here the end-to-end migrate (phase 2 by a re-run or by the hook) and
//! the shared helpers; by noun: `guards` (refusals before the copy),
//! `resume` (killed runs finished by a re-run), `joins` (followers joining
//! the raft cluster) and `rollback`.

mod guards;
mod joins;
mod resume;
mod rollback;

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

/// Phase 2 here is the post-upgrade hook, which finishes a pending migrate.
#[tokio::test]
async fn migrate_moves_a_standalone_vault_with_500_secrets_to_three_raft_voters_finished_by_the_hook(
) {
    end_to_end(ClusterOptions::vault(), true).await;
}
