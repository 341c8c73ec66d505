//! Operations that meet: one is interrupted, and the next command is another
//! one (or the same one at a random moment). Each case proves that the keys
//! stored afterwards unseal every pod and that nothing initialized twice.
//!
//! Here what meets the store (a corrupt checkpoint, a stale read, a retired
//! generation); by noun: `init` (init interrupted), `rotation` (rotations
//! interrupted or watched) and `lease` (the Lease between runs).

mod init;
mod lease;
mod rotation;

use crate::harness::Env;
use sandbox::ClusterOptions;

fn all_unsealed(statuses: &[serde_json::Value]) -> bool {
    statuses.iter().all(|s| s["sealed"] == false)
}

async fn statuses(env: &Env) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for i in 0..env.cluster.pod_names().len() as u32 {
        out.push(env.seal_status(i).await);
    }
    out
}

/// A checkpoint that cannot be parsed does not block `unseal` with the
/// stored credentials; the warning names the command that clears it.
#[tokio::test]
async fn a_corrupt_checkpoint_does_not_block_unseal() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes"]).await.ok();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client().await, env.cluster.namespace());
    let corrupt = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{}-checkpoint", env.secret_name())},
        "stringData": {"checkpoint.json": "{not json"},
    });
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(corrupt).unwrap(),
        )
        .await
        .expect("plant a corrupt checkpoint");
    env.cluster.restart_all().await.unwrap();
    let run = env.plugin(&["unseal"]).await.ok();
    assert!(
        run.stderr.contains("kubectl vault checkpoint abandon"),
        "{run:?}"
    );
    assert!(all_unsealed(&statuses(&env).await));
}

/// A write based on a stale read fails instead of overwriting: the store
/// carries the resourceVersion it read.
#[tokio::test]
async fn a_write_based_on_a_stale_read_is_refused() {
    use kubectl_vault::ops::credentials::Credentials;
    use kubectl_vault::ops::secret::Secret;
    use kubectl_vault::ops::store::{CredentialStore, StoreError};
    use kubectl_vault::store::kube_secret::SecretStore;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    let creds = |generation: u32, share: &str| Credentials {
        schema: kubectl_vault::ops::credentials::CREDENTIALS_SCHEMA,
        seal: Default::default(),
        recovery_keys_b64: vec![],
        root_token: Secret::new(format!("token-{generation}")),
        unseal_keys_b64: vec![Secret::new(share)],
        key_threshold: 1,
        key_shares: 1,
        generation,
        cluster_id: String::new(),
        created_at: String::new(),
        server_version: String::new(),
        history: vec![],
    };
    let name = env.secret_name();
    let stale = SecretStore::new(env.client().await, env.cluster.namespace(), &name);
    let fresh = SecretStore::new(env.client().await, env.cluster.namespace(), &name);
    fresh
        .save_credentials(&creds(1, "c2hhcmUtMQ=="))
        .await
        .unwrap();
    assert_eq!(
        stale.load_credentials().await.unwrap().unwrap().generation,
        1
    );
    fresh.load_credentials().await.unwrap();
    fresh
        .save_credentials(&creds(2, "c2hhcmUtMg=="))
        .await
        .unwrap();
    let err = stale
        .save_credentials(&creds(2, "c3RhbGUtMg=="))
        .await
        .expect_err("a stale write must fail");
    assert!(matches!(err, StoreError::Superseded { .. }), "{err}");
    let kept = fresh.load_credentials().await.unwrap().unwrap();
    assert_eq!(kept.unseal_keys_b64[0].expose(), "c2hhcmUtMg==");
    // The same write again, once it has landed, is not a conflict.
    fresh
        .save_credentials(&creds(2, "c2hhcmUtMg=="))
        .await
        .unwrap();
}

/// Shares retired by a rotate still come with a working root token (a rekey
/// keeps it). Importing them over the current ones, even with --force, is
/// refused: the active node's rekey probe says they are not current.
#[tokio::test]
async fn importing_a_retired_generation_is_refused_even_with_force() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let work = tempfile::tempdir().unwrap();
    let old = work.path().join("generation-1.yaml");
    let old = old.to_str().unwrap();
    env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
        .await
        .ok();
    env.plugin(&["credentials", "export", "--plaintext", "-f", old])
        .await
        .ok();
    env.plugin(&["rotate", "--yes"]).await.ok();
    let current = env.stored_credentials().await.unwrap();
    assert_eq!(current["generation"], 2);
    let refused = env
        .plugin(&["credentials", "import", "--force", "--yes", "-f", old])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("rekey probe"), "{refused:?}");
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        current,
        "nothing changed"
    );
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
}
