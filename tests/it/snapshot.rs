//! Raft snapshots and recovery against real OpenBao pods: save to a folder
//! and to a real S3-compatible server (moto), wipe every pod, `recover`;
//! restore into another cluster; crash matrices over restore and recover;
//! guards; retention. The bucket cases on S3, Azure and GCS together are in
//! `object_stores.rs`.
//!
//! By noun, besides: `moto` (the S3 server), `conn` (a plain HTTP/1.1
//! client), `retention` and `crash_matrix` (restore and recover killed at
//! every failpoint).

mod conn;
mod crash_matrix;
mod emulators;
mod guards;
mod keyring;
mod keys;
mod moto;
mod object_stores;
pub(crate) mod restore_test;
mod retention;

use crate::harness::{Env, Run};
use conn::{http, Conn};
pub(crate) use moto::Moto;
use sandbox::ClusterOptions;
use std::path::{Path, PathBuf};

/// Writes `kv/s-0..n` (KV v1) through the active pod on one connection.
pub(crate) async fn write_secrets(env: &Env, token: &str, n: usize, tag: &str) {
    env.write_kv(token, "probe", tag).await;
    let leader = env.active_ordinal().await;
    let mut conn = Conn::to_pod(env, leader).await;
    for i in 0..n {
        let body = format!("{{\"value\":\"{tag}-{i}\"}}");
        let (status, text) = conn
            .request("POST", &format!("/v1/kv/s-{i}"), Some(token), Some(&body))
            .await;
        assert!(
            status == 204 || status == 200,
            "write s-{i}: {status} {text}"
        );
    }
}

/// Reads `kv/s-0..n` back and checks every value.
pub(crate) async fn assert_secrets(env: &Env, token: &str, n: usize, tag: &str) {
    let leader = env.active_ordinal().await;
    let mut conn = Conn::to_pod(env, leader).await;
    for i in 0..n {
        let (status, text) = conn
            .request("GET", &format!("/v1/kv/s-{i}"), Some(token), None)
            .await;
        assert_eq!(status, 200, "read s-{i}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("kv json");
        assert_eq!(v["data"]["value"], format!("{tag}-{i}"), "s-{i}");
    }
}

/// Every pod reads through the restored keyring: `sys/leader` (served from
/// the pod's own storage) and a KV read with `token`, each through that pod.
async fn assert_every_pod_reads(env: &Env, token: &str, key: &str, want: &str) {
    for i in 0..env.cluster.pod_names().len() as u32 {
        let (code, out) = env
            .bao(i, None, &["read", "-format=json", "sys/leader"], None)
            .await;
        assert_eq!(code, 0, "pod {i} sys/leader: {out}");
        let (code, out) = env
            .bao(
                i,
                Some(token),
                &["kv", "get", "-field=value", &format!("kv/{key}")],
                None,
            )
            .await;
        assert_eq!(code, 0, "pod {i} kv get: {out}");
        assert_eq!(out.trim(), want, "pod {i}");
    }
}

pub(crate) async fn root_token(env: &Env) -> String {
    env.stored_credentials().await.expect("credentials")["root_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn init(env: &Env) {
    env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
        .await
        .ok();
}

async fn plugin_s3(env: &Env, moto: &Moto, args: &[&str]) -> Run {
    let vars = moto.env();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.plugin_with_env(args, &pairs).await
}

pub(crate) fn snapshots_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    v.sort();
    v
}

#[tokio::test]
async fn round_trip_to_a_folder_and_s3_then_recover_after_every_pod_was_wiped() {
    let moto = Moto::start().await;
    moto.create_bucket("vault-snaps").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    init(&env).await;
    let token = root_token(&env).await;
    write_secrets(&env, &token, 1000, "v1").await;
    let creds_before = env.stored_credentials().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let to_dir = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to_dir])
        .await
        .ok();
    let saved = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "save",
            "--to",
            "s3://vault-snaps/prod/",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(saved["manifest"]["generation"], 1, "{saved}");
    assert!(
        saved["manifest"]["size"].as_u64().unwrap() > 1024,
        "{saved}"
    );
    assert!(
        saved["manifest"]["raft_committed_index"].as_u64().is_some(),
        "{saved}"
    );
    assert_eq!(snapshots_in(dir.path()).len(), 1);

    // Both copies list as verified.
    let listed = env
        .plugin(&[
            "snapshot", "list", "--from", &to_dir, "--verify", "-o", "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["status"], "verified", "{listed}");
    let listed = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "list",
            "--from",
            "s3://vault-snaps/prod/",
            "--verify",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["status"], "verified", "{listed}");
    assert_eq!(listed[0]["manifest"]["sha256"], saved["manifest"]["sha256"]);

    // Every pod loses its data; init refuses and points to recover.
    for i in 0..3 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    let refused = env.plugin(&["init", "--yes"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("kubectl vault recover"),
        "{refused:?}"
    );

    let recovered = plugin_s3(
        &env,
        &moto,
        &["recover", "--from", "s3://vault-snaps/prod/", "--yes"],
    )
    .await
    .ok();
    assert!(recovered.stdout.contains("generation 1"), "{recovered:?}");
    env.assert_whole(3).await;
    assert_secrets(&env, &token, 1000, "v1").await;
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        creds_before,
        "credentials untouched"
    );
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn restore_into_a_second_cluster_unseals_with_the_source_credentials() {
    let source = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(1)
            .name("source"),
    )
    .await;
    init(&source).await;
    let token = root_token(&source).await;
    write_secrets(&source, &token, 50, "src").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.snap");
    source
        .plugin(&["snapshot", "save", "--to", file.to_str().unwrap()])
        .await
        .ok();
    let exported = dir.path().join("source-credentials.yaml");
    source
        .plugin(&[
            "credentials",
            "export",
            "--plaintext",
            "-f",
            exported.to_str().unwrap(),
        ])
        .await
        .ok();

    let target = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(3)
            .name("target"),
    )
    .await;
    init(&target).await;
    let target_creds = target.stored_credentials().await.unwrap();
    let out = target
        .plugin(&[
            "snapshot",
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--credentials",
            exported.to_str().unwrap(),
            "--yes",
        ])
        .await
        .ok();
    // Shows in the test log whether a pod needed the keyring remedy.
    eprintln!("restore said: {}", out.stdout);
    assert!(out.stdout.contains("(forced)"), "{out:?}");
    assert!(out.stdout.contains("--credentials"), "{out:?}");
    // Item 11: the restore ends with every pod reading through the restored
    // keyring, standbys included, right away (no restart by the test).
    assert_every_pod_reads(&target, &token, "probe", "src").await;
    target.assert_whole(3).await;
    assert_secrets(&target, &token, 50, "src").await;
    let now = target.stored_credentials().await.unwrap();
    assert_ne!(now["root_token"], target_creds["root_token"]);
    assert_eq!(now["root_token"], token.as_str());
    // Item 4: the replaced credentials of the target moved into the history.
    let kept = now["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|g| g["root_token"] == target_creds["root_token"])
        .unwrap_or_else(|| panic!("the target's credentials are kept: {now}"));
    assert_eq!(kept["unseal_keys_b64"], target_creds["unseal_keys_b64"]);
    // The stored credentials unseal the restored data after a restart.
    target.restart_all_and_unseal().await;
    target.assert_whole(3).await;
    target.assert_no_secret_exposed().await;
}

/// Guards: each refusal changes nothing.
#[tokio::test]
async fn guards_refuse_bad_snapshots_and_recover_without_one_never_inits() {
    let moto = Moto::start().await;
    moto.create_bucket("empty").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    init(&env).await;
    let token = root_token(&env).await;
    env.write_kv(&token, "probe", "before").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.snap");
    env.plugin(&["snapshot", "save", "--to", good.to_str().unwrap()])
        .await
        .ok();
    env.write_kv(&token, "probe", "after").await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("good.snap.json")).unwrap()).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let variant = |name: &str, data: &[u8], manifest: &serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let mut m = manifest.clone();
        m["snapshot"] = name.into();
        std::fs::write(dir.path().join(format!("{name}.json")), m.to_string()).unwrap();
        path
    };
    let truncated = variant("truncated.snap", &bytes[..bytes.len() / 2], &manifest);
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let corrupt = variant("corrupt.snap", &flipped, &manifest);
    let mut newer = manifest.clone();
    newer["generation"] = 7.into();
    let newer = variant("newer.snap", &bytes, &newer);

    for (path, words) in [
        (&truncated, "truncated"),
        (&corrupt, "sha256"),
        (&newer, "newer than any stored"),
    ] {
        let run = env
            .plugin(&[
                "snapshot",
                "restore",
                "--from",
                path.to_str().unwrap(),
                "--yes",
            ])
            .await;
        assert_eq!(run.code, 1, "{}: {run:?}", path.display());
        assert!(run.stderr.contains(words), "{}: {run:?}", path.display());
        assert!(run.stderr.contains("nothing was changed"), "{run:?}");
    }
    let verify = env
        .plugin(&["snapshot", "verify", "--from", corrupt.to_str().unwrap()])
        .await;
    assert_eq!(verify.code, 1, "{verify:?}");
    // Nothing changed: the newest write is still there, no checkpoint.
    assert_eq!(env.read_kv(&token, "probe").await, "after");
    assert!(!env.checkpoint_exists().await);

    // Empty bucket, then no snapshot at all: recover stops and does not init.
    let creds = env.stored_credentials().await.unwrap();
    env.cluster.wipe_pod(0).await.unwrap();
    let run = plugin_s3(&env, &moto, &["recover", "--from", "s3://empty/", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("initialized nothing"), "{run:?}");
    let empty = tempfile::tempdir().unwrap();
    let run = env
        .plugin(&[
            "recover",
            "--from",
            &format!("{}/", empty.path().display()),
            "--yes",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(env.seal_status(0).await["initialized"], false);
    assert_eq!(env.stored_credentials().await.unwrap(), creds);
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}
