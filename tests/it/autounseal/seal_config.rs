//! A static seal configured outside the HCL server config, and the
//! restore-test, whose throwaway server copies the live seal stanza from
//! the HCL config files the pod spec names:
//! - in the container's environment (`BAO_SEAL_TYPE`, `BAO_STATIC_SEAL_*`),
//!   which the throwaway server inherits: `snapshot save --restore-test`
//!   passes through that seal;
//! - only in a JSON config file, which the restore-test does not read:
//!   refused before any server starts (exit 1), naming the pod, what was
//!   not found and the commands to run next.
//!
//! Either way the live cluster is unchanged and nothing is left in a pod.

use crate::harness::Env;
use crate::snapshot::restore_test::{assert_nothing_left, live, wait_for_voters};
use sandbox::SealIn;
use std::time::Duration;

/// The server config file of `pod`, as the sandbox wrote it.
fn hcl_config(env: &Env, pod: &str) -> String {
    std::fs::read_to_string(env.cluster.dir().join("pods").join(pod).join("config.hcl"))
        .expect("server config")
}

/// `snapshot save --restore-test --sentinel kv/before` on an initialized
/// auto-unseal cluster whose root token is `token`: it passes through
/// `seal` (nothing submitted, the stored root token and recovery keys of
/// the current generation are the restored data's, the sentinel read), the
/// saved manifest records it, the live cluster is unchanged and nothing is
/// left in a pod.
pub(super) async fn save_passes_the_restore_test(env: &Env, token: &str, seal: &str) {
    env.write_kv(token, "sentinel", "live").await;
    wait_for_voters(env, token).await;
    let before = live(env, token).await;
    let generation = env.stored_credentials().await.unwrap()["generation"].clone();
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{}/", dir.path().display());
    let started = std::time::Instant::now();
    let saved = env
        .plugin(&[
            "snapshot",
            "save",
            "--to",
            &to,
            "--restore-test",
            "--sentinel",
            "kv/before",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    eprintln!(
        "save --restore-test through a {seal} seal: {:?}",
        started.elapsed()
    );
    let tested = &saved["restore_test"];
    assert_eq!(tested["result"], "passed", "{saved}");
    assert_eq!(tested["generation"], generation, "{saved}");
    assert!(
        env.cluster
            .pod_names()
            .iter()
            .any(|p| tested["pod"] == p.as_str()),
        "{saved}"
    );
    assert_eq!(tested["report"]["seal"], seal, "{saved}");
    assert_eq!(tested["report"]["shares_submitted"], 0, "{saved}");
    assert_eq!(tested["report"]["root_token_valid"], true, "{saved}");
    assert_eq!(tested["report"]["recovery_keys_verified"], true, "{saved}");
    assert_eq!(tested["sentinel"], "kv/before", "{saved}");
    assert_eq!(tested["server_removed"], true, "{saved}");
    assert_eq!(tested["recorded"], true, "{saved}");
    assert_eq!(saved["manifest"]["seal"], seal, "{saved}");
    assert_eq!(
        saved["manifest"]["restore_test"]["result"], "passed",
        "{saved}"
    );
    // The manifest on disk carries the result too.
    let name = saved["manifest"]["snapshot"].as_str().unwrap();
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{name}.json"))).unwrap())
            .unwrap();
    assert_eq!(on_disk["restore_test"]["result"], "passed", "{on_disk}");
    assert_nothing_left(env, Duration::from_secs(5)).await;
    assert_eq!(live(env, token).await, before, "the live cluster changed");
}

#[tokio::test]
async fn save_restore_test_passes_through_a_seal_set_in_the_environment() {
    let (env, creds) =
        super::initialized_with(super::static_seal(1).seal_in(SealIn::Environment)).await;
    // The seal comes from the environment: there is no stanza to copy.
    let config = hcl_config(&env, "openbao-0");
    assert!(!config.contains("seal"), "{config}");
    save_passes_the_restore_test(&env, creds["root_token"].as_str().unwrap(), "static").await;
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn restore_test_refuses_a_seal_set_only_in_a_json_config_clearly() {
    let (env, creds) =
        super::initialized_with(super::static_seal(1).seal_in(SealIn::JsonConfig)).await;
    let config = hcl_config(&env, "openbao-0");
    assert!(!config.contains("seal"), "{config}");
    let token = creds["root_token"].as_str().unwrap();
    env.write_kv(token, "sentinel", "live").await;
    wait_for_voters(&env, token).await;
    let before = live(&env, token).await;

    let dir = tempfile::tempdir().unwrap();
    let from = format!("{}/", dir.path().display());
    let saved = env
        .plugin(&["snapshot", "save", "--to", &from, "-o", "json"])
        .await
        .ok()
        .json();
    let name = saved["manifest"]["snapshot"].as_str().unwrap().to_owned();
    let refused = env
        .plugin(&[
            "snapshot",
            "verify",
            "--from",
            &from,
            "--snapshot",
            &name,
            "--restore-test",
            "-v",
        ])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    for line in refused
        .stderr
        .lines()
        .filter(|l| l.contains("could not start"))
    {
        eprintln!("{line}");
    }
    let json_file = env
        .cluster
        .dir()
        .join("pods")
        .join("openbao-0")
        .join("seal.json");
    for says in [
        "could not start: pod openbao-0 has no top-level `seal` stanza in the HCL server config it names",
        "neither BAO_SEAL_TYPE nor VAULT_SEAL_TYPE",
        &format!("the JSON config {} is not read", json_file.display()),
        "nothing was started",
        "re-run `kubectl vault snapshot verify --from ",
        &format!(" --snapshot {name} --restore-test`; meanwhile `kubectl vault snapshot verify --from "),
    ] {
        assert!(refused.stderr.contains(says), "{says}: {refused:?}");
    }
    assert!(
        !refused.stderr.contains("throwaway server started"),
        "{refused:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{name}.json"))).unwrap())
            .unwrap();
    let recorded = &manifest["restore_test"];
    assert_eq!(recorded["result"], "error", "{recorded}");
    assert!(
        recorded["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no top-level `seal` stanza")),
        "{recorded}"
    );
    assert_nothing_left(&env, Duration::from_secs(5)).await;
    assert_eq!(live(&env, token).await, before, "the live cluster changed");
}
