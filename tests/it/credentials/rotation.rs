//! Rotations on an encrypted store killed at every boundary: the
//! checkpoint holds the new shares only SOPS-encrypted, resuming needs the
//! identity, and the result is encrypted for the same recipient and
//! unseals a restarted cluster.

use super::{all_sealed, all_unsealed, assert_refused, keygen, secrets_api};
use crate::harness::{sops_decrypt_json, Env};
use sandbox::ClusterOptions;

/// Every `root_token` and `unseal_keys_b64` string anywhere in `value`.
fn secrets_in(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("root_token", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("unseal_keys_b64", serde_json::Value::Array(items)) => {
                        out.extend(items.iter().filter_map(|i| i.as_str().map(str::to_owned)))
                    }
                    _ => secrets_in(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| secrets_in(i, out)),
        _ => {}
    }
}

/// rotate on an encrypted store, killed at `failpoint`: the checkpoint holds
/// the new shares only SOPS-encrypted, resuming needs the identity, and the
/// result is encrypted for the same recipient and unseals a restarted cluster.
async fn crash_encrypted_rotate_at(failpoint: &str) {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "ops");
    let identity = key.file.to_str().unwrap();
    env.plugin(&[
        "init",
        "--yes",
        "--age-recipient",
        &key.recipient,
        "--age-identity",
        identity,
    ])
    .await
    .ok();
    let before = env.stored_credentials_sops(&key.file).await.unwrap();

    let spec = format!("{failpoint}=panic");
    let crashed = env
        .plugin_with_env(
            &[
                "rotate",
                "--yes",
                "--root-token",
                "--age-identity",
                identity,
            ],
            &[("FAILPOINTS", spec.as_str())],
        )
        .await;
    assert_ne!(
        crashed.code, 0,
        "{failpoint} must stop the run: {crashed:?}"
    );
    let checkpoint_name = format!("{}-checkpoint", env.secret_name());
    if let Some(raw) = env.secret_data(&checkpoint_name, "checkpoint.json").await {
        let opened = sops_decrypt_json(&raw, &key.file);
        let mut held = Vec::new();
        secrets_in(&opened, &mut held);
        for s in &held {
            assert!(
                !raw.contains(s.as_str()),
                "checkpoint holds a secret in plaintext"
            );
        }
        // Without the identity the interrupted rotate cannot be read, let alone resumed.
        let refused = env.plugin(&["rotate", "--yes", "--root-token"]).await;
        assert_refused(&refused, &[&key.recipient]);
    }

    env.plugin(&[
        "rotate",
        "--yes",
        "--root-token",
        "--age-identity",
        identity,
    ])
    .await
    .ok();
    assert!(!env.checkpoint_exists().await, "checkpoint deleted");
    let after = env
        .stored_credentials_sops(&key.file)
        .await
        .expect("sops -d opens the rotated credentials");
    assert!(
        after["generation"].as_u64().unwrap() >= 2,
        "{}",
        after["generation"]
    );
    // A resumed rotate may rekey once more: the first generation is kept somewhere in history.
    assert!(
        after["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["unseal_keys_b64"] == before["unseal_keys_b64"]),
        "the first generation is kept in history"
    );
    assert_ne!(after["root_token"], before["root_token"]);
    let secret = secrets_api(&env)
        .await
        .get(&env.secret_name())
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["kubectl-vault.io/age-recipients"],
        key.recipient
    );
    env.cluster.restart_all().await.unwrap();
    all_sealed(&env).await;
    env.plugin(&["unseal", "--age-identity", identity])
        .await
        .ok();
    all_unsealed(&env).await;
    env.assert_no_secret_exposed_in(&after).await;
}

macro_rules! encrypted_rotate_crash_cases {
    ($($name:ident: $failpoint:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_encrypted_rotate_at($failpoint).await;
        }
    )*};
}

encrypted_rotate_crash_cases! {
    encrypted_rotate_crash_after_update_before_checkpoint: "rotate::after_update";
    encrypted_rotate_crash_after_checkpoint_before_verify: "rotate::after_checkpoint";
    encrypted_rotate_crash_after_verify_before_final_write: "rotate::after_verify";
    encrypted_rotate_crash_after_final_write: "rotate::after_final_write";
    encrypted_root_crash_after_generate: "root::after_generate";
    encrypted_root_crash_after_checkpoint: "root::after_checkpoint";
    encrypted_root_crash_after_final_write_before_revoke: "root::after_final_write";
    encrypted_root_crash_after_revoke: "root::after_revoke";
}
