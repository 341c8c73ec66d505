//! A credentials export and its import: `credentials export` encrypts for
//! the recorded recipients (a 0600 file that `sops -d` opens and Flux can
//! apply), a tampered file is refused, and `import` proves the shares
//! before it stores them, by a rekey probe on an unsealed cluster or by
//! unsealing a restarted one; different stored credentials need `--force`.

use super::{all_sealed, all_unsealed, assert_refused, keygen, secrets_api, secrets_of, sha256};
use crate::harness::{deps_bin, Env};
use kube::api::{DeleteParams, PostParams};
use sandbox::ClusterOptions;

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
