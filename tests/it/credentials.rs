//! SOPS-encrypted credentials end to end: `init --age-recipient`, unseal with
//! only the age identity, `credentials show|export|import|encrypt|decrypt`,
//! against real OpenBao pods, the real `sops` and `age-keygen`.

use crate::harness::{deps_bin, sops_decrypt_json, Env, Run};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
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

#[tokio::test]
async fn export_delete_import_then_unseal_after_restart() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "ops");
    let identity = key.file.to_str().unwrap();
    // Without the recipient's identity, init refuses before sys/init: it
    // could not read back and check what it stores.
    let refused = env
        .plugin(&["init", "--yes", "--age-recipient", &key.recipient])
        .await;
    assert_refused(
        &refused,
        &["not initialized", &key.recipient, "--age-identity"],
    );
    assert_eq!(env.seal_status(0).await["initialized"], false);
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
    let creds = env.stored_credentials_sops(&key.file).await.unwrap();

    // Export encrypts for the recorded recipient; the file is 0600 and opens with sops -d.
    let file = keys.path().join("unseal.sops.yaml");
    env.plugin(&[
        "credentials",
        "export",
        "-f",
        file.to_str().unwrap(),
        "--age-identity",
        identity,
    ])
    .await
    .ok();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let exported = std::fs::read_to_string(&file).unwrap();
    for s in secrets_of(&creds) {
        assert!(
            !exported.contains(&s),
            "the export holds a secret in plaintext"
        );
    }
    let out = std::process::Command::new(deps_bin().join("sops"))
        .args(["-d", "--input-type", "yaml", "--output-type", "yaml"])
        .arg(&file)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", &key.file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sops -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What Flux applies after decrypting is a valid Secret (strict schema, 1.37).
    let decrypted = keys.path().join("decrypted.yaml");
    std::fs::write(&decrypted, &out.stdout).unwrap();
    let validated = std::process::Command::new(deps_bin().join("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .arg(&decrypted)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        validated.status.success(),
        "kubernetes-validate: {}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    std::fs::remove_file(&decrypted).unwrap();
    let manifest: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["kind"], "Secret");
    assert_eq!(manifest["metadata"]["name"], env.secret_name().as_str());
    let inner: serde_json::Value =
        serde_json::from_str(manifest["stringData"]["credentials.json"].as_str().unwrap()).unwrap();
    assert_eq!(inner["root_token"], creds["root_token"]);
    let plain: serde_yaml::Value = serde_yaml::from_str(&exported).unwrap();
    assert_eq!(plain["sops"]["encrypted_regex"], "^(data|stringData)$");
    assert_eq!(
        plain["metadata"]["name"],
        env.secret_name().as_str(),
        "metadata stays plaintext"
    );

    // A tampered file (a plaintext label edited) is refused; the Secret is untouched.
    let api = secrets_api(&env).await;
    let before = api
        .get(&env.secret_name())
        .await
        .unwrap()
        .metadata
        .resource_version;
    let tampered = keys.path().join("tampered.sops.yaml");
    assert!(exported.contains("kubectl-vault"));
    std::fs::write(
        &tampered,
        exported.replacen("\"kubectl-vault\"", "\"someone-else\"", 1),
    )
    .unwrap();
    let refused = env
        .plugin(&[
            "credentials",
            "import",
            "-f",
            tampered.to_str().unwrap(),
            "--age-identity",
            identity,
        ])
        .await;
    assert_refused(
        &refused,
        &["tampered.sops.yaml", "MAC", "nothing was imported"],
    );
    let after = api
        .get(&env.secret_name())
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(before, after, "the Secret was not written");

    // Delete the Secret, import the export: every pod is unsealed, so the
    // active node proves the shares in a rekey probe that changes nothing.
    api.delete(&env.secret_name(), &DeleteParams::default())
        .await
        .unwrap();
    let imported = env
        .plugin(&[
            "credentials",
            "import",
            "-f",
            file.to_str().unwrap(),
            "--age-identity",
            identity,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(imported["result"], "imported", "{imported}");
    assert_eq!(imported["proof"]["proof"], "rekey_probe", "{imported}");
    let back = env
        .stored_credentials_sops(&key.file)
        .await
        .expect("stored encrypted again");
    assert_eq!(back["root_token"], creds["root_token"]);
    assert_eq!(back["unseal_keys_b64"], creds["unseal_keys_b64"]);
    env.cluster.restart_all().await.unwrap();
    all_sealed(&env).await;
    env.plugin(&["unseal", "--age-identity", identity])
        .await
        .ok();
    all_unsealed(&env).await;

    // Different credentials in the Secret: import refuses without --force.
    let mut other = creds.clone();
    other["root_token"] = "s.not-this-cluster".into();
    other["unseal_keys_b64"] = serde_json::json!(["b3RoZXIx", "b3RoZXIy", "b3RoZXIz"]);
    other["key_shares"] = 3.into();
    other["key_threshold"] = 2.into();
    let mut secret = api.get(&env.secret_name()).await.unwrap();
    secret.metadata.annotations = None;
    secret.data = Some(
        [(
            "credentials.json".to_owned(),
            k8s_openapi::ByteString(serde_json::to_vec(&other).unwrap()),
        )]
        .into(),
    );
    api.replace(&env.secret_name(), &PostParams::default(), &secret)
        .await
        .unwrap();
    let before = api
        .get(&env.secret_name())
        .await
        .unwrap()
        .metadata
        .resource_version;
    let refused = env
        .plugin(&[
            "credentials",
            "import",
            "-f",
            file.to_str().unwrap(),
            "--age-identity",
            identity,
        ])
        .await;
    assert_refused(&refused, &["different credentials", "--force"]);
    let after = api
        .get(&env.secret_name())
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(before, after, "the Secret was not written");
    // With --force (and --yes for the confirmation) the export wins, the
    // replaced shares are kept in the history.
    env.plugin(&[
        "credentials",
        "import",
        "-f",
        file.to_str().unwrap(),
        "--age-identity",
        identity,
        "--force",
        "--yes",
    ])
    .await
    .ok();
    let shown = env
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
    assert_eq!(
        shown["root_token"]["sha256"],
        sha256(creds["root_token"].as_str().unwrap())
    );
    assert_eq!(
        shown["history"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    let back = env
        .stored_credentials_sops(&key.file)
        .await
        .expect("encrypted");
    assert_eq!(back["root_token"], creds["root_token"]);
    env.assert_no_secret_exposed_in(&creds).await;
}

#[tokio::test]
async fn encrypt_then_decrypt_round_trip_keeps_unseal_working() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "ops");
    let identity = key.file.to_str().unwrap();
    // A second recipient whose key this run does not use: a break-glass key.
    let spare = keygen(keys.path(), "break-glass");
    env.plugin(&["init", "--yes"]).await.ok();
    let creds = env
        .stored_credentials()
        .await
        .expect("plaintext credentials");

    // A plaintext store does not export without a recipient or --plaintext.
    let refused = env.plugin(&["credentials", "export"]).await;
    assert_refused(&refused, &["--age-recipient", "--plaintext"]);
    assert!(refused.stdout.is_empty(), "nothing printed: {refused:?}");
    let refused = env.plugin(&["credentials", "encrypt"]).await;
    assert_refused(&refused, &["--age-recipient"]);

    let invalid = env
        .plugin_with_env(
            &["credentials", "encrypt", "--age-identity", identity],
            &[("SOPS_AGE_RECIPIENTS", "age1-not-a-key")],
        )
        .await;
    assert_refused(&invalid, &["SOPS_AGE_RECIPIENTS"]);

    // The recipients from SOPS_AGE_RECIPIENTS, as sops reads them (empty entries skipped).
    let from_env = format!(" ,{},{}", key.recipient, spare.recipient);
    env.plugin_with_env(
        &["credentials", "encrypt", "--age-identity", identity],
        &[("SOPS_AGE_RECIPIENTS", from_env.as_str())],
    )
    .await
    .ok();
    let raw = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .unwrap();
    for s in secrets_of(&creds) {
        assert!(
            !raw.contains(&s),
            "encrypted Secret holds a secret in plaintext"
        );
    }
    let opened = env.stored_credentials_sops(&key.file).await.unwrap();
    assert_eq!(opened["root_token"], creds["root_token"]);

    // Swapped list items in the stored document: refused as corrupt, naming the Secret.
    let api = secrets_api(&env).await;
    let original = api.get(&env.secret_name()).await.unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    doc["unseal_keys_b64"].as_array_mut().unwrap().swap(0, 1);
    let mut tampered = original.clone();
    tampered.data = Some(
        [(
            "credentials.json".to_owned(),
            k8s_openapi::ByteString(serde_json::to_vec(&doc).unwrap()),
        )]
        .into(),
    );
    api.replace(&env.secret_name(), &PostParams::default(), &tampered)
        .await
        .unwrap();
    let refused = env.plugin(&["unseal", "--age-identity", identity]).await;
    assert_refused(&refused, &[&env.secret_name(), "corrupt", "MAC mismatch"]);
    let mut restored = api.get(&env.secret_name()).await.unwrap();
    restored.data = original.data.clone();
    api.replace(&env.secret_name(), &PostParams::default(), &restored)
        .await
        .unwrap();
    env.cluster.restart_all().await.unwrap();
    all_sealed(&env).await;
    assert_refused(
        &env.plugin(&["unseal"]).await,
        &[&key.recipient, &spare.recipient],
    );
    // Either recipient's identity opens it; here the one encrypt did not use.
    env.plugin(&["unseal", "--age-identity", spare.file.to_str().unwrap()])
        .await
        .ok();
    all_unsealed(&env).await;
    let secret = secrets_api(&env)
        .await
        .get(&env.secret_name())
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["kubectl-vault.io/age-recipients"],
        format!("{},{}", key.recipient, spare.recipient)
    );
    assert_eq!(
        env.stored_credentials_sops(&spare.file).await.unwrap()["root_token"],
        creds["root_token"]
    );
    env.assert_no_secret_exposed_in(&creds).await;

    // decrypt asks first; then the Secret is plaintext JSON without the annotation.
    let unconfirmed = env
        .plugin(&["credentials", "decrypt", "--age-identity", identity])
        .await;
    assert_refused(&unconfirmed, &["--yes"]);
    env.plugin(&[
        "credentials",
        "decrypt",
        "--yes",
        "--age-identity",
        identity,
    ])
    .await
    .ok();
    let plain = env.stored_credentials().await.expect("plaintext again");
    assert_eq!(plain["root_token"], creds["root_token"]);
    let secret = secrets_api(&env)
        .await
        .get(&env.secret_name())
        .await
        .unwrap();
    assert!(
        !secret
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kubectl-vault.io/age-recipients"),
        "annotation removed"
    );
    env.cluster.restart_all().await.unwrap();
    all_sealed(&env).await;
    env.plugin(&["unseal"]).await.ok();
    all_unsealed(&env).await;
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn import_after_a_restart_proves_the_shares_by_unsealing() {
    use base64::Engine as _;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let dir = tempfile::tempdir().unwrap();
    env.plugin(&["init", "--yes"]).await.ok();
    let creds = env.stored_credentials().await.unwrap();

    let file = dir.path().join("plain.yaml");
    let path = file.to_str().unwrap();
    env.plugin(&["credentials", "export", "--plaintext", "-f", path])
        .await
        .ok();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = env
        .plugin(&["credentials", "export", "--plaintext", "-f", path])
        .await;
    assert_refused(&again, &["plain.yaml"]);

    let api = secrets_api(&env).await;
    api.delete(&env.secret_name(), &DeleteParams::default())
        .await
        .unwrap();
    env.cluster.restart_all().await.unwrap();
    all_sealed(&env).await;

    // Shares of the right length that belong to no cluster: the pods refuse
    // them, nothing is stored, the pods stay sealed with no progress left.
    let mut other = creds.clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    other["unseal_keys_b64"] = creds["unseal_keys_b64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let mut bytes = b64.decode(k.as_str().unwrap()).unwrap();
            bytes.iter_mut().for_each(|b| *b ^= 0x5a);
            serde_json::Value::String(b64.encode(bytes))
        })
        .collect();
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, serde_json::to_vec(&other).unwrap()).unwrap();
    let refused = env
        .plugin(&["credentials", "import", "-f", bogus.to_str().unwrap()])
        .await;
    assert_refused(&refused, &["do not unseal", "nothing was imported"]);
    assert!(
        !env.secret_exists(&env.secret_name()).await,
        "nothing stored"
    );
    all_sealed(&env).await;
    for i in 0..3 {
        assert_eq!(
            env.seal_status(i).await["progress"],
            0,
            "pod {i} progress reset"
        );
    }

    let imported = env
        .plugin(&["credentials", "import", "-f", path, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(imported["proof"]["proof"], "unsealed", "{imported}");
    assert_eq!(imported["proof"]["pods"].as_array().map(Vec::len), Some(3));
    all_unsealed(&env).await;
    let back = env.stored_credentials().await.expect("stored");
    assert_eq!(back["root_token"], creds["root_token"]);
    assert_eq!(back["unseal_keys_b64"], creds["unseal_keys_b64"]);
    env.assert_no_secret_exposed().await;
}

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
