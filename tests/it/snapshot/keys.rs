//! Issue 10, item 4: restores keep every key and token.

use super::{init, root_token};
use crate::harness::Env;
use sandbox::ClusterOptions;

/// After restoring a snapshot taken before `rotate --root-token`, no stored
/// token was valid in the restored data, the restored generation was not
/// recorded as current, and `rotate` failed.
#[tokio::test]
async fn restore_from_before_a_root_token_rotation_keeps_a_working_token_and_rotate_works_after() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    init(&env).await;
    let t1 = root_token(&env).await;
    env.write_kv(&t1, "probe", "before").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("before.snap");
    let file = file.to_str().unwrap();
    env.plugin(&["snapshot", "save", "--to", file]).await.ok();
    env.plugin(&["rotate", "--yes", "--root-token"]).await.ok();
    let rotated = env.stored_credentials().await.unwrap();
    assert_eq!(rotated["generation"], 2, "{rotated:?}");
    let t2 = rotated["root_token"].as_str().unwrap().to_owned();
    assert_ne!(t2, t1);
    env.write_kv(&t2, "probe", "after").await;

    let out = env
        .plugin(&["snapshot", "restore", "--from", file, "--yes"])
        .await
        .ok();
    assert!(out.stdout.contains("generation 1"), "{out:?}");
    let now = env.stored_credentials().await.unwrap();
    assert_eq!(now["generation"], 1, "the restored generation is current");
    assert_eq!(
        now["root_token"],
        t1.as_str(),
        "the restored data's token is current"
    );
    assert_eq!(env.read_kv(&t1, "probe").await, "before");
    // Nothing dropped: generation 2's shares and token are in the history.
    let history = now["history"].as_array().expect("history");
    assert!(
        history.iter().any(|g| g["generation"] == 2
            && g["root_token"] == t2.as_str()
            && g["unseal_keys_b64"] == rotated["unseal_keys_b64"]),
        "generation 2 kept"
    );

    // rotate works right after, numbering above every generation used.
    env.plugin(&["rotate", "--yes", "--root-token"]).await.ok();
    let again = env.stored_credentials().await.unwrap();
    assert_eq!(again["generation"], 3);
    let t3 = again["root_token"].as_str().unwrap().to_owned();
    assert_eq!(env.read_kv(&t3, "probe").await, "before");
    env.restart_all_and_unseal().await;
    env.assert_whole(1).await;
    env.assert_no_secret_exposed().await;
}
