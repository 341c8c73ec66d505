//! A plaintext store put into a SOPS envelope and back: `credentials
//! encrypt` for the recipients (`--age-recipient` or `SOPS_AGE_RECIPIENTS`),
//! corrupt envelopes refused, either recipient's identity unseals, and
//! `credentials decrypt` leaves plaintext JSON that unseals without one.

use super::{all_sealed, all_unsealed, assert_refused, keygen, secrets_api, secrets_of};
use crate::harness::Env;
use kube::api::PostParams;
use sandbox::ClusterOptions;

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
