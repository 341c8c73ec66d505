//! Who can read the stored keys is pinned: a write never changes the age
//! recipients of an encrypted document unless asked with the new set and
//! --yes; an edited annotation or plaintext under it is refused as tampering.

use crate::credentials::keygen;
use crate::harness::Env;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sandbox::ClusterOptions;

async fn recipients_in(env: &Env) -> String {
    let raw = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .expect("credentials stored");
    let doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    doc["sops"]["age"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// A merge patch of the credentials Secret, as someone with `patch` on it could send.
async fn merge(secrets: &Api<Secret>, name: &str, patch: &serde_json::Value) {
    secrets
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .expect("patch the Secret");
}

#[tokio::test]
async fn recipients_are_pinned_and_tampering_is_refused() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let keys = tempfile::tempdir().unwrap();
    let ops = keygen(keys.path(), "ops");
    let personal = keygen(keys.path(), "personal");
    let ops_id = ops.file.to_str().unwrap();
    let personal_id = personal.file.to_str().unwrap();
    env.plugin(&[
        "init",
        "--yes",
        "--age-recipient",
        &ops.recipient,
        "--age-identity",
        ops_id,
    ])
    .await
    .ok();
    assert_eq!(recipients_in(&env).await, ops.recipient);

    // An operator's personal SOPS_AGE_RECIPIENTS does not re-encrypt the keys.
    env.plugin_with_env(
        &["rotate", "--yes", "--age-identity", ops_id],
        &[("SOPS_AGE_RECIPIENTS", personal.recipient.as_str())],
    )
    .await
    .ok();
    assert_eq!(recipients_in(&env).await, ops.recipient);
    let generation = |v: serde_json::Value| v["generation"].clone();
    let before = env
        .plugin(&[
            "credentials",
            "show",
            "-o",
            "json",
            "--age-identity",
            ops_id,
        ])
        .await
        .ok()
        .json();

    // Someone who can patch the Secret adds their key to the annotation.
    let secrets: Api<Secret> = Api::namespaced(env.client().await, env.cluster.namespace());
    let annotation = "kubectl-vault.io/age-recipients";
    let patch = serde_json::json!({"metadata": {"annotations": {
        annotation: format!("{},{}", ops.recipient, personal.recipient)
    }}});
    merge(&secrets, &env.secret_name(), &patch).await;
    let refused = env
        .plugin(&["rotate", "--yes", "--age-identity", ops_id])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains(annotation), "{refused:?}");
    assert!(!env.checkpoint_exists().await, "nothing was started");
    assert_eq!(
        recipients_in(&env).await,
        ops.recipient,
        "nothing re-encrypted"
    );

    // Plaintext under the annotation is refused too, even by unseal.
    let plaintext = serde_json::json!({"root_token": "x", "unseal_keys_b64": ["eA=="],
        "key_threshold": 1, "key_shares": 1, "generation": 9, "created_at": ""});
    let patch = serde_json::json!({"stringData": {"credentials.json": plaintext.to_string()}});
    let saved = env
        .secret_data(&env.secret_name(), "credentials.json")
        .await
        .unwrap();
    merge(&secrets, &env.secret_name(), &patch).await;
    let refused = env.plugin(&["unseal", "--age-identity", ops_id]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("tampered"), "{refused:?}");

    // Put the real document and annotation back: the explicit change, with
    // the complete new set and --yes, is the one way to change readers.
    let patch = serde_json::json!({
        "metadata": {"annotations": {annotation: ops.recipient}},
        "stringData": {"credentials.json": saved},
    });
    merge(&secrets, &env.secret_name(), &patch).await;
    let after = env
        .plugin(&[
            "credentials",
            "show",
            "-o",
            "json",
            "--age-identity",
            ops_id,
        ])
        .await
        .ok()
        .json();
    assert_eq!(generation(after), generation(before));
    env.plugin(&[
        "rotate",
        "--yes",
        "--age-recipient",
        &personal.recipient,
        "--age-identity",
        ops_id,
        "--age-identity",
        personal_id,
    ])
    .await
    .ok();
    assert_eq!(recipients_in(&env).await, personal.recipient);
    env.restart_all_and_unseal_with(&["--age-identity", personal_id])
        .await;
}
