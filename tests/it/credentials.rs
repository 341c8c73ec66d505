//! SOPS-encrypted credentials end to end: `init --age-recipient`, unseal with
//! only the age identity, `credentials show|export|import|encrypt|decrypt`,
//! against real OpenBao pods, the real `sops` and `age-keygen`.
//!
//! Here `init --age-recipient`, unseal and `show`; by noun: `export`
//! (export and import), `envelope` (encrypt and decrypt a stored document)
//! and `rotation` (rotations killed on an encrypted store).

mod envelope;
mod export;
mod rotation;

use crate::harness::{deps_bin, sops_decrypt_json, Env, Run};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use sandbox::ClusterOptions;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// An age key made by the real `age-keygen`.
pub(crate) struct AgeKey {
    pub(crate) file: PathBuf,
    pub(crate) recipient: String,
    text: String,
}

pub(crate) fn keygen(dir: &Path, name: &str) -> AgeKey {
    let file = dir.join(format!("{name}.agekey"));
    let out = std::process::Command::new(deps_bin().join("age-keygen"))
        .arg("-o")
        .arg(&file)
        .output()
        .expect("run age-keygen");
    assert!(out.status.success(), "age-keygen: {out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_owned();
    AgeKey {
        file,
        recipient,
        text,
    }
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Root token and shares of a decrypted credentials document.
fn secrets_of(creds: &serde_json::Value) -> Vec<String> {
    let mut all = vec![creds["root_token"].as_str().unwrap().to_owned()];
    for k in creds["unseal_keys_b64"].as_array().unwrap() {
        all.push(k.as_str().unwrap().to_owned());
    }
    all
}

fn assert_refused(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 1, "expected a refusal (exit 1): {run:?}");
    for n in needles {
        assert!(run.stderr.contains(n), "stderr should name `{n}`: {run:?}");
    }
}

async fn all_sealed(env: &Env) {
    for i in 0..env.cluster.pod_names().len() as u32 {
        assert_eq!(env.seal_status(i).await["sealed"], true, "pod {i} sealed");
    }
}

async fn all_unsealed(env: &Env) {
    for i in 0..env.cluster.pod_names().len() as u32 {
        assert_eq!(
            env.seal_status(i).await["sealed"],
            false,
            "pod {i} unsealed"
        );
    }
}

async fn secrets_api(env: &Env) -> Api<Secret> {
    Api::namespaced(env.client().await, env.cluster.namespace())
}

#[tokio::test]
async fn init_with_a_recipient_encrypts_from_the_first_write_and_unseals_only_with_the_identity() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "ops");
    let identity = key.file.to_str().unwrap();

    // Crash once the keys are in the checkpoint: the checkpoint is already sops.
    let crashed = env
        .plugin_with_env(
            &[
                "init",
                "--yes",
                "--age-recipient",
                &key.recipient,
                "--age-identity",
                identity,
            ],
            &[("FAILPOINTS", "init::after_checkpoint=panic")],
        )
        .await;
    assert_ne!(crashed.code, 0, "{crashed:?}");
    let checkpoint_name = format!("{}-checkpoint", env.secret_name());
    let checkpoint = env
        .secret_data(&checkpoint_name, "checkpoint.json")
        .await
        .expect("checkpoint written");
    let opened = sops_decrypt_json(&checkpoint, &key.file);
    let in_checkpoint = &opened["phase"]["credentials"];
    for s in secrets_of(in_checkpoint) {
        assert!(
            !checkpoint.contains(&s),
            "the checkpoint holds a secret in plaintext"
        );
    }

    // The re-run has no --age-recipient: it inherits the checkpoint's recipients.
    env.plugin(&["init", "--yes", "--age-identity", identity])
        .await
        .ok();
    assert!(
        !env.checkpoint_exists().await,
        "checkpoint deleted after init"
    );
    let raw = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .expect("credentials stored");
    let creds = env
        .stored_credentials_sops(&key.file)
        .await
        .expect("sops -d opens the stored credentials");
    assert_eq!(creds["root_token"], in_checkpoint["root_token"]);
    assert_eq!(creds["key_threshold"], 3);
    for s in secrets_of(&creds) {
        assert!(!raw.contains(&s), "the Secret holds a secret in plaintext");
    }
    let secret = secrets_api(&env)
        .await
        .get(&env.secret_name())
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["kubectl-vault.io/age-recipients"],
        key.recipient
    );

    // Restart: without an identity unseal is refused and names the recipient.
    env.cluster.restart_all().await.unwrap();
    all_sealed(&env).await;
    let refused = env.plugin(&["unseal"]).await;
    assert_refused(&refused, &[&key.recipient, "--age-identity"]);
    all_sealed(&env).await;
    env.plugin(&["unseal", "--age-identity", identity])
        .await
        .ok();
    all_unsealed(&env).await;

    // In-cluster: a Flux-style identity Secret (data key ending in .agekey).
    secrets_api(&env)
        .await
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "sops-age"},
                "stringData": {"identity.agekey": key.text},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    env.cluster.restart_all().await.unwrap();
    all_sealed(&env).await;
    env.plugin(&["unseal", "--age-identity-secret", "sops-age"])
        .await
        .ok();
    all_unsealed(&env).await;
    // ... and the sops environment.
    env.cluster.restart_all().await.unwrap();
    env.plugin_with_env(&["unseal"], &[("SOPS_AGE_KEY_FILE", identity)])
        .await
        .ok();
    all_unsealed(&env).await;

    // show: redacted, with fingerprints; --reveal prints the values.
    let shown = env
        .plugin(&["credentials", "show", "--age-identity", identity])
        .await
        .ok();
    for s in secrets_of(&creds) {
        assert!(
            shown.stdout.contains(&sha256(&s)),
            "fingerprint shown: {}",
            shown.stdout
        );
    }
    assert!(shown.stdout.contains(&key.recipient), "{}", shown.stdout);
    let json = env
        .plugin(&[
            "credentials",
            "show",
            "-o",
            "json",
            "--age-identity",
            identity,
        ])
        .await
        .ok()
        .json();
    assert_eq!(json["encrypted"], true);
    assert_eq!(json["generation"], 1);
    assert_eq!(json["key_threshold"], 3);
    assert_eq!(json["shares"].as_array().unwrap().len(), 5);
    assert_eq!(
        json["root_token"]["sha256"],
        sha256(creds["root_token"].as_str().unwrap())
    );
    assert!(json["root_token"].get("value").is_none(), "{json}");
    env.assert_no_secret_exposed_in(&creds).await;

    let unconfirmed = env
        .plugin(&[
            "credentials",
            "show",
            "--reveal",
            "--age-identity",
            identity,
        ])
        .await;
    assert_refused(&unconfirmed, &["--yes"]);
    let revealed = env
        .plugin(&[
            "credentials",
            "show",
            "--reveal",
            "--yes",
            "--age-identity",
            identity,
        ])
        .await
        .ok();
    for s in secrets_of(&creds) {
        assert!(revealed.stdout.contains(&s), "--reveal prints every secret");
    }
}
