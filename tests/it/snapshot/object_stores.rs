//! The bucket cases on every object store the plugin speaks, against one
//! cluster and one process of each store: S3 (moto), Azure Blob (Azurite)
//! and GCS (fake-gcs-server), all installed by `scripts/install-deps`.
//!
//! On each store: retention with `--keep` and `--max-age`, list and
//! verify, restore, the restore guards (truncated, corrupt, 10 MiB of
//! random bytes and a garbage `state.bin` each with a matching manifest, a
//! newer key generation, a name with a path, a manifest describing another
//! object, another cluster's newer snapshot), recover from an empty bucket
//! and from a prefix of junk (both initialize nothing) and from the store
//! with 1,000 KV secrets read back; a save killed after its stream (with a part already
//! uploaded) and a save whose stream breaks leave no snapshot and no
//! manifest.
//!
//! GCS saves go through the JSON API's resumable upload (`object_store`'s
//! GCS client writes through the XML API, which fake-gcs-server does not
//! route); on GCS a killed save also leaves its session uncommitted: the
//! object never appears. Planted snapshots are put through the emulator's
//! JSON media upload.

use super::emulators::{Emulator, Kind, Store};
use super::{init, root_token, snapshots_in, Moto};
use crate::harness::Env;
use sandbox::ClusterOptions;
use sha2::Digest;
use std::time::Duration;

const BUCKET: &str = "vault-snaps";
const EMPTY: &str = "empty";

fn names(listed: &serde_json::Value) -> Vec<String> {
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Puts `data` as snapshot `name` under `prefix` with a manifest copied
/// from `template`; `matching` makes its sha256 and size describe `data`.
async fn plant(
    store: &Store,
    prefix: &str,
    name: &str,
    data: &[u8],
    template: &serde_json::Value,
    matching: bool,
) {
    let mut m = template.clone();
    m["snapshot"] = name.into();
    if matching {
        m["sha256"] = hex(&sha2::Sha256::digest(data)).into();
        m["size"] = data.len().into();
    }
    store.put(BUCKET, prefix, name, data).await;
    store
        .put(
            BUCKET,
            prefix,
            &format!("{name}.json"),
            m.to_string().as_bytes(),
        )
        .await;
}

/// Save with `--keep 2` three times and `--max-age 0s` once, list, verify,
/// restore.
async fn keeps_lists_verifies_and_restores(store: &Store, env: &Env, token: &str) {
    let who = store.name();
    let to = store.url(BUCKET, "p/");
    let mut saved = Vec::new();
    for _ in 0..3 {
        let out = store
            .plugin(
                env,
                &["snapshot", "save", "--to", &to, "--keep", "2", "-o", "json"],
            )
            .await
            .ok()
            .json();
        saved.push(out["manifest"]["snapshot"].as_str().unwrap().to_owned());
        // Names carry the second they were taken.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let listed = store
        .plugin(env, &["snapshot", "list", "--from", &to, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        names(&listed),
        [saved[2].clone(), saved[1].clone()],
        "{who}: exactly two kept, the newest first"
    );
    // --max-age 0s would delete everything, but never the newest verified.
    store
        .plugin(env, &["snapshot", "save", "--to", &to, "--max-age", "0s"])
        .await
        .ok();
    let left = names(
        &store
            .plugin(env, &["snapshot", "list", "--from", &to, "-o", "json"])
            .await
            .ok()
            .json(),
    );
    assert_eq!(left.len(), 1, "{who}: {left:?}");
    assert!(!saved.contains(&left[0]), "{who}: {left:?}");
    let keys = store.keys(BUCKET, "p/").await;
    assert_eq!(
        keys,
        [format!("p/{}", left[0]), format!("p/{}.json", left[0])],
        "{who}: retention deletes a snapshot with its manifest"
    );
    let listed = store
        .plugin(
            env,
            &["snapshot", "list", "--from", &to, "--verify", "-o", "json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{who}: {listed}");
    assert_eq!(listed[0]["status"], "verified", "{who}: {listed}");
    let name = listed[0]["name"].as_str().unwrap();
    store
        .plugin(
            env,
            &["snapshot", "verify", "--from", &to, "--snapshot", name],
        )
        .await
        .ok();
    env.write_kv(token, "probe", "after").await;
    store
        .plugin(env, &["snapshot", "restore", "--from", &to, "--yes"])
        .await
        .ok();
    assert_eq!(env.read_kv(token, "probe").await, "v1", "{who}");
}

/// Issue 10's restore guards, read from the store: each refusal is exit 1
/// with "nothing was changed" and no checkpoint.
async fn guards_refuse_bad_snapshots(
    store: &Store,
    env: &Env,
    token: &str,
    local: &(Vec<u8>, serde_json::Value),
) {
    let who = store.name();
    let (bytes, template) = local;
    plant(
        store,
        "bad/",
        "truncated.snap",
        &bytes[..bytes.len() / 2],
        template,
        false,
    )
    .await;
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    plant(store, "bad/", "corrupt.snap", &flipped, template, false).await;
    let mut newer = template.clone();
    newer["generation"] = 7.into();
    plant(store, "bad/", "newer.snap", bytes, &newer, false).await;
    // Random bytes and a garbage state.bin, each with a manifest that
    // matches them: in bad/ for restore, in junk/ for recover.
    let mut random = vec![0u8; 10 << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
    let garbage = super::guards::archive_with_state(&[7u8; 8192]);
    for prefix in ["bad/", "junk/"] {
        plant(store, prefix, "random-10m.snap", &random, template, true).await;
        plant(
            store,
            prefix,
            "garbage-state.snap",
            &garbage,
            template,
            true,
        )
        .await;
    }

    let from = store.url(BUCKET, "bad/");
    let verify = store
        .plugin(
            env,
            &[
                "snapshot",
                "verify",
                "--from",
                &from,
                "--snapshot",
                "garbage-state.snap",
            ],
        )
        .await;
    assert_eq!(verify.code, 1, "{who}: {verify:?}");
    assert!(
        verify
            .stderr
            .contains("state.bin is not raft storage entries"),
        "{who}: {verify:?}"
    );
    env.write_kv(token, "probe", "unchanged").await;
    for (name, says) in [
        ("truncated.snap", "truncated"),
        ("corrupt.snap", "sha256"),
        ("newer.snap", "newer than any stored"),
        ("random-10m.snap", "is not a raft snapshot"),
        (
            "garbage-state.snap",
            "state.bin is not raft storage entries",
        ),
    ] {
        let started = std::time::Instant::now();
        let run = store
            .plugin(
                env,
                &[
                    "snapshot",
                    "restore",
                    "--from",
                    &from,
                    "--snapshot",
                    name,
                    "--yes",
                ],
            )
            .await;
        assert_eq!(run.code, 1, "{who} {name}: {run:?}");
        assert!(run.stderr.contains(says), "{who} {name}: {run:?}");
        assert!(
            run.stderr.contains("nothing was changed"),
            "{who} {name}: {run:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{who} {name}: refused at once, not after {:?}",
            started.elapsed()
        );
        assert!(!env.checkpoint_exists().await, "{who} {name}");
    }

    // A name with a path, and a manifest that describes another object.
    let mut alias = template.clone();
    alias["snapshot"] = "corrupt.snap".into();
    store.put(BUCKET, "bad/", "alias.snap", bytes).await;
    store
        .put(
            BUCKET,
            "bad/",
            "alias.snap.json",
            alias.to_string().as_bytes(),
        )
        .await;
    for (name, says) in [
        ("../x.snap", "plain snapshot file name"),
        ("alias.snap", "describes corrupt.snap"),
    ] {
        let run = store
            .plugin(
                env,
                &[
                    "snapshot",
                    "restore",
                    "--from",
                    &from,
                    "--snapshot",
                    name,
                    "--yes",
                ],
            )
            .await;
        assert_eq!(run.code, 1, "{who} {name}: {run:?}");
        assert!(run.stderr.contains(says), "{who} {name}: {run:?}");
        assert!(!env.checkpoint_exists().await, "{who} {name}");
    }

    // Another cluster's newer snapshot in a shared prefix is not taken.
    let mut foreign = template.clone();
    foreign["cluster_id"] = "another-cluster".into();
    foreign["created_at"] = "2099-01-01T00:00:00Z".into();
    plant(store, "shared/", "foreign.snap", bytes, &foreign, false).await;
    let run = store
        .plugin(
            env,
            &[
                "snapshot",
                "restore",
                "--from",
                &store.url(BUCKET, "shared/"),
                "--yes",
            ],
        )
        .await;
    assert_eq!(run.code, 1, "{who}: {run:?}");
    assert!(run.stderr.contains("other clusters"), "{who}: {run:?}");
    assert!(!env.checkpoint_exists().await, "{who}");
    assert_eq!(env.read_kv(token, "probe").await, "unchanged", "{who}");
}

/// Wipes the pod; recover from an empty bucket initializes nothing, from
/// the store it brings the 1,000 secrets back with the same credentials.
async fn recovers_from_the_store(store: &Store, env: &Env, token: &str) {
    let who = store.name();
    let creds = env.stored_credentials().await.unwrap();
    env.cluster.wipe_pod(0).await.unwrap();
    let none = store
        .plugin(env, &["recover", "--from", &store.url(EMPTY, ""), "--yes"])
        .await;
    assert_eq!(none.code, 1, "{who}: {none:?}");
    assert!(
        none.stderr.contains("initialized nothing"),
        "{who}: {none:?}"
    );
    assert_eq!(env.seal_status(0).await["initialized"], false, "{who}");
    // A prefix holding only random bytes and a garbage state.bin, each with
    // a matching manifest: nothing to recover from.
    let junk = store
        .plugin(
            env,
            &["recover", "--from", &store.url(BUCKET, "junk/"), "--yes"],
        )
        .await;
    assert_eq!(junk.code, 1, "{who}: {junk:?}");
    assert!(
        junk.stderr.contains("initialized nothing"),
        "{who}: {junk:?}"
    );
    assert_eq!(env.seal_status(0).await["initialized"], false, "{who}");
    assert!(!env.checkpoint_exists().await, "{who}");
    let recovered = store
        .plugin(
            env,
            &["recover", "--from", &store.url(BUCKET, "p/"), "--yes"],
        )
        .await
        .ok();
    assert!(
        recovered.stdout.contains("generation 1"),
        "{who}: {recovered:?}"
    );
    env.assert_whole(1).await;
    super::assert_secrets(env, token, 1000, "v1").await;
    assert_eq!(env.stored_credentials().await.unwrap(), creds, "{who}");
    assert!(!env.checkpoint_exists().await, "{who}");
}

/// A save killed after its whole stream, before the upload is committed,
/// and a save whose stream breaks after 9 MiB: the snapshot is bigger than
/// one 8 MiB part, so both run a multipart (block) upload. Neither leaves a
/// snapshot or a manifest that a reader can see.
async fn killed_and_broken_saves_leave_nothing(store: &Store, env: &Env) {
    let who = store.name();
    let to = store.url(BUCKET, "crash/");
    let args = ["snapshot", "save", "--to", to.as_str()];
    let crashed = store
        .plugin_crashing_at(env, &args, "snapshot::before_finish=panic")
        .await;
    assert_ne!(crashed.code, 0, "{who}: {crashed:?}");
    assert!(
        crashed.stderr.contains("snapshot::before_finish"),
        "{who}: the failpoint fired: {crashed:?}"
    );
    assert_eq!(
        store.keys(BUCKET, "crash/").await,
        Vec::<String>::new(),
        "{who}"
    );
    if let Store::S3(moto) = store {
        // The upload had begun: the killed save left a multipart upload in
        // progress (invisible; a bucket lifecycle rule reaps it).
        let uploads = multipart_uploads(moto).await;
        assert_eq!(uploads.len(), 1, "{uploads:?}");
        assert!(uploads[0].starts_with("crash/"), "{uploads:?}");
    }

    let broken = store
        .plugin_crashing_at(env, &args, "snapshot::stream_chunk=36*off->return")
        .await;
    assert_ne!(broken.code, 0, "{who}: {broken:?}");
    assert!(
        broken
            .stderr
            .contains("broken by the snapshot::stream_chunk failpoint"),
        "{who}: the failpoint fired: {broken:?}"
    );
    assert_eq!(
        store.keys(BUCKET, "crash/").await,
        Vec::<String>::new(),
        "{who}"
    );
    if let Store::S3(moto) = store {
        // Aborted: the broken save's multipart upload is gone, the killed
        // one's is still the only one.
        let uploads = multipart_uploads(moto).await;
        assert_eq!(uploads.len(), 1, "{uploads:?}");
    }
    // The same target then takes a whole save.
    let out = store
        .plugin(env, &["snapshot", "save", "--to", &to, "-o", "json"])
        .await
        .ok()
        .json();
    let size = out["manifest"]["size"].as_u64().unwrap();
    assert!(size > 9 << 20, "{who}: the snapshot spans parts: {size}");
    assert_eq!(store.keys(BUCKET, "crash/").await.len(), 2, "{who}");
}

/// The keys of the multipart uploads in progress in the S3 bucket (moto's
/// `ListMultipartUploads`), one per upload.
async fn multipart_uploads(moto: &Moto) -> Vec<String> {
    let (status, text) = super::http(
        &moto.hostport(),
        "GET",
        &format!("/{BUCKET}?uploads"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    text.split("<Upload>")
        .skip(1)
        .map(|upload| {
            upload
                .split_once("<Key>")
                .and_then(|(_, rest)| rest.split_once("</Key>"))
                .map(|(key, _)| key.to_owned())
                .unwrap_or_else(|| panic!("an upload without a key: {text}"))
        })
        .collect()
}

/// Writes `n` secrets of 750 KiB of random base64 (little compression),
/// so that snapshots span more than one upload part.
async fn write_bulk(env: &Env, token: &str, n: usize) {
    let leader = env.active_ordinal().await;
    let mut conn = super::Conn::to_pod(env, leader).await;
    for i in 0..n {
        let mut raw = vec![0u8; 576 * 1024];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
        let value = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw);
        let body = format!("{{\"value\":\"{value}\"}}");
        let (status, text) = conn
            .request(
                "POST",
                &format!("/v1/kv/bulk-{i}"),
                Some(token),
                Some(&body),
            )
            .await;
        assert!(status == 204 || status == 200, "bulk-{i}: {status} {text}");
    }
}

#[tokio::test]
async fn every_object_store_keeps_restores_recovers_and_commits_only_whole_snapshots() {
    let (env, moto, azurite, gcs) = tokio::join!(
        Env::start(ClusterOptions::openbao().parallel().replicas(1)),
        Moto::start(),
        Emulator::start(Kind::Azure),
        Emulator::start(Kind::Gcs),
    );
    let stores = [Store::S3(moto), Store::Azure(azurite), Store::Gcs(gcs)];
    for store in &stores {
        for (k, v) in store.env() {
            // nextest runs each test in its own process: only this test's
            // clients read these.
            std::env::set_var(k, v);
        }
        store.create_bucket(BUCKET).await;
        store.create_bucket(EMPTY).await;
    }
    init(&env).await;
    let token = root_token(&env).await;
    super::write_secrets(&env, &token, 1000, "v1").await;
    // A snapshot of this state in a local folder: the template of planted
    // snapshots, and what GCS lists, restores and recovers.
    let dir = tempfile::tempdir().unwrap();
    env.plugin(&[
        "snapshot",
        "save",
        "--to",
        &format!("{}/", dir.path().display()),
    ])
    .await
    .ok();
    let snap = snapshots_in(dir.path()).pop().expect("a local snapshot");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", snap.display())).unwrap())
            .unwrap();
    let local = (std::fs::read(&snap).unwrap(), manifest);

    for store in &stores {
        let started = std::time::Instant::now();
        keeps_lists_verifies_and_restores(store, &env, &token).await;
        guards_refuse_bad_snapshots(store, &env, &token, &local).await;
        recovers_from_the_store(store, &env, &token).await;
        eprintln!(
            "{}: reads, guards, recover in {:?}",
            store.name(),
            started.elapsed()
        );
    }
    write_bulk(&env, &token, 20).await;
    for store in &stores {
        let started = std::time::Instant::now();
        killed_and_broken_saves_leave_nothing(store, &env).await;
        eprintln!(
            "{}: killed and broken saves in {:?}",
            store.name(),
            started.elapsed()
        );
    }
    env.assert_no_secret_exposed().await;
}
