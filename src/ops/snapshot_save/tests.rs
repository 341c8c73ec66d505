//! The save's steps over the in-memory doubles: what the store holds after
//! each way a save can end.

use super::double::{sha256, snapshot_bytes, FakeSource, FixedClock, MemoryStore};
use super::*;

const NAME: &str = "openbao-20261203T120000Z.snap";

fn clock() -> FixedClock {
    FixedClock("2026-12-03T12:00:00Z".parse().unwrap())
}

async fn plan_and_save(
    source: &mut FakeSource,
    store: &MemoryStore,
    on_existing: OnExisting,
) -> Result<Saved, SaveError> {
    let plan = plan(source, store, "openbao", &clock()).await?;
    save(source, store, plan, on_existing, 3, &clock()).await
}

/// A manifest of `data` as snapshot `name`, of `cluster`, taken at `created`.
fn manifest(name: &str, data: &[u8], cluster: &str, created: &str) -> Manifest {
    Manifest {
        schema: MANIFEST_SCHEMA,
        snapshot: name.into(),
        sha256: sha256(data),
        size: data.len() as u64,
        cluster_id: cluster.into(),
        raft_committed_index: None,
        raft_term: None,
        server_version: "2.7.2".into(),
        generation: 1,
        created_at: created.into(),
        source_pod: "openbao-0".into(),
        seal: "shamir".into(),
        restore_test: None,
    }
}

#[tokio::test]
async fn a_good_save_commits_the_snapshot_and_then_its_manifest() {
    let data = snapshot_bytes(50_000);
    let mut source = FakeSource::new(data.clone());
    let store = MemoryStore::default();
    let saved = plan_and_save(&mut source, &store, OnExisting::Keep)
        .await
        .unwrap();

    let held = store.held();
    assert_eq!(
        held.events,
        [
            format!("upload {NAME}"),
            format!("commit {NAME}"),
            format!("manifest {NAME}")
        ]
    );
    assert_eq!(held.snapshots[NAME], data);
    let written = &held.manifests[NAME];
    assert_eq!(written, &saved.manifest);
    assert_eq!(written.sha256, sha256(&data));
    assert_eq!(written.size, 50_000);
    assert_eq!(written.generation, 3);
    assert_eq!(written.cluster_id, "c1");
    assert_eq!(written.raft_committed_index, Some(42));
    assert_eq!(written.source_pod, "openbao-0");
    assert_eq!(written.seal, "shamir");
    assert_eq!(written.created_at, "2026-12-03T12:00:00Z");
    assert_eq!(saved.object, format!("mem://snaps/{NAME}"));
    assert!(saved.pruned.is_empty());
}

#[tokio::test]
async fn a_source_that_breaks_mid_stream_leaves_nothing_and_is_a_refusal() {
    let mut source = FakeSource::new(snapshot_bytes(50_000));
    source.break_at = Some(20_000);
    let store = MemoryStore::default();
    let err = plan_and_save(&mut source, &store, OnExisting::Keep)
        .await
        .unwrap_err();

    assert!(
        matches!(&err, SaveError::Stream(SnapshotError::Read { reason, .. }) if reason.contains("went away")),
        "{err:?}"
    );
    assert!(err.is_refusal());
    let held = store.held();
    assert_eq!(
        held.events,
        [format!("upload {NAME}"), format!("abort {NAME}")]
    );
    assert_eq!(held.open_uploads, 0);
    assert!(held.snapshots.is_empty());
    assert!(held.manifests.is_empty());
}

#[tokio::test]
async fn a_store_that_fails_mid_stream_leaves_nothing_and_is_a_failure() {
    let mut source = FakeSource::new(snapshot_bytes(50_000));
    let store = MemoryStore::default();
    store.held().fail_write_at = Some(10_000);
    let err = plan_and_save(&mut source, &store, OnExisting::Keep)
        .await
        .unwrap_err();

    assert!(matches!(err, SaveError::StoreWrite(_)), "{err:?}");
    assert!(!err.is_refusal());
    assert_eq!(err.to_string(), "nothing was kept");
    let held = store.held();
    assert_eq!(held.events.last().unwrap(), &format!("abort {NAME}"));
    assert_eq!(held.open_uploads, 0);
    assert!(held.snapshots.is_empty() && held.manifests.is_empty());
}

#[tokio::test]
async fn a_producer_that_failed_wins_over_a_stream_that_looked_whole() {
    let mut source = FakeSource::new(snapshot_bytes(50_000));
    source.fail_close = true;
    let store = MemoryStore::default();
    let err = plan_and_save(&mut source, &store, OnExisting::Keep)
        .await
        .unwrap_err();

    assert!(matches!(err, SaveError::Source(_)), "{err:?}");
    assert!(!err.is_refusal());
    assert!(err.to_string().contains("exited with 2"), "{err}");
    let held = store.held();
    assert_eq!(held.events.last().unwrap(), &format!("abort {NAME}"));
    assert!(held.snapshots.is_empty() && held.manifests.is_empty());
}

#[tokio::test]
async fn streams_that_are_not_a_whole_raft_snapshot_are_refused_and_leave_nothing() {
    let mut text = vec![b'x'; 50_000];
    for (data, short) in [
        (snapshot_bytes(100), true),
        (std::mem::take(&mut text), false),
    ] {
        let mut source = FakeSource::new(data);
        let store = MemoryStore::default();
        let err = plan_and_save(&mut source, &store, OnExisting::Keep)
            .await
            .unwrap_err();
        match short {
            true => assert!(
                matches!(err, SaveError::Stream(SnapshotError::Short { size: 100 })),
                "{err:?}"
            ),
            false => assert!(
                matches!(err, SaveError::Stream(SnapshotError::NotASnapshot)),
                "{err:?}"
            ),
        }
        assert!(err.is_refusal());
        let held = store.held();
        assert!(held.snapshots.is_empty() && held.manifests.is_empty());
        assert_eq!(held.open_uploads, 0);
    }
}

#[tokio::test]
async fn a_failing_commit_writes_no_manifest() {
    let mut source = FakeSource::new(snapshot_bytes(50_000));
    let store = MemoryStore::default();
    store.held().fail_commit = true;
    let err = plan_and_save(&mut source, &store, OnExisting::Keep)
        .await
        .unwrap_err();

    assert!(matches!(err, SaveError::Commit(_)), "{err:?}");
    assert!(!err.is_refusal());
    let held = store.held();
    assert_eq!(
        held.events,
        [format!("upload {NAME}"), format!("failed commit {NAME}")]
    );
    assert!(held.snapshots.is_empty());
    assert!(held.manifests.is_empty());
}

#[tokio::test]
async fn an_existing_object_is_reported_before_anything_streams_and_kept_unless_replaced() {
    let store = MemoryStore::default();
    store.put(NAME, b"someone's file".to_vec(), None);
    let data = snapshot_bytes(50_000);
    let mut source = FakeSource::new(data.clone());

    let planned = plan(&mut source, &store, "openbao", &clock())
        .await
        .unwrap();
    assert_eq!(
        planned.existing.as_deref(),
        Some(format!("mem://snaps/{NAME}").as_str())
    );
    assert_eq!(source.opened, 0, "nothing streamed before the question");
    assert!(store.held().events.is_empty());

    let err = save(
        &mut source,
        &store,
        planned.clone(),
        OnExisting::Keep,
        3,
        &clock(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SaveError::NotReplaced { .. }), "{err:?}");
    assert!(err.is_refusal());
    assert!(err.to_string().contains("--yes replaces it"), "{err}");
    assert_eq!(source.opened, 0);
    assert_eq!(store.held().snapshots[NAME], b"someone's file");
    assert!(store.held().events.is_empty());

    save(
        &mut source,
        &store,
        planned,
        OnExisting::Replace,
        3,
        &clock(),
    )
    .await
    .unwrap();
    assert_eq!(store.held().snapshots[NAME], data);
    assert!(store.held().manifests.contains_key(NAME));
}

#[tokio::test]
async fn retention_prunes_only_this_clusters_snapshots_after_a_save() {
    let store = MemoryStore::default();
    let old = snapshot_bytes(5_000);
    for (name, cluster, created) in [
        ("openbao-a.snap", "c1", "2026-12-01T00:00:00Z"),
        ("openbao-b.snap", "c1", "2026-12-02T00:00:00Z"),
        ("foreign.snap", "c2", "2026-12-02T12:00:00Z"),
    ] {
        store.put(
            name,
            old.clone(),
            Some(manifest(name, &old, cluster, created)),
        );
    }
    // An upload in progress by another run: no manifest yet.
    store.put("partial.snap", old.clone(), None);

    let mut source = FakeSource::new(snapshot_bytes(50_000));
    let mut saved = plan_and_save(&mut source, &store, OnExisting::Keep)
        .await
        .unwrap();
    let policy = Policy {
        keep: Some(1),
        max_age: None,
    };
    saved
        .apply_retention(&store, policy, &clock())
        .await
        .unwrap();

    assert_eq!(saved.pruned, ["openbao-b.snap", "openbao-a.snap"]);
    let held = store.held();
    let left: Vec<&str> = held.snapshots.keys().map(String::as_str).collect();
    assert_eq!(left, ["foreign.snap", NAME, "partial.snap"]);
    assert!(held.manifests.contains_key("foreign.snap"));
    assert!(held.manifests.contains_key(NAME));
}

#[tokio::test]
async fn retention_never_deletes_the_newest_verified_snapshot() {
    let store = MemoryStore::default();
    let good = snapshot_bytes(5_000);
    for (name, created) in [
        ("openbao-a.snap", "2026-11-01T00:00:00Z"),
        ("openbao-b.snap", "2026-11-02T00:00:00Z"),
    ] {
        store.put(
            name,
            good.clone(),
            Some(manifest(name, &good, "c1", created)),
        );
    }
    // The newest of this cluster no longer matches its manifest.
    let mut corrupt = manifest("openbao-c.snap", &good, "c1", "2026-12-03T00:00:00Z");
    corrupt.sha256 = "0".repeat(64);
    store.put("openbao-c.snap", good.clone(), Some(corrupt.clone()));
    let mut saved = Saved {
        object: "mem://snaps/openbao-c.snap".into(),
        manifest: corrupt,
        pruned: vec![],
    };
    // Everything of November is past the age limit; one is kept by count.
    let policy = Policy {
        keep: Some(1),
        max_age: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
    };
    saved
        .apply_retention(&store, policy, &clock())
        .await
        .unwrap();

    assert_eq!(saved.pruned, ["openbao-a.snap"]);
    let held = store.held();
    assert!(
        held.snapshots.contains_key("openbao-b.snap"),
        "the newest verified"
    );
    assert!(held.manifests.contains_key("openbao-b.snap"));
    assert!(held.snapshots.contains_key("openbao-c.snap"));
    assert!(!held.snapshots.contains_key("openbao-a.snap"));
    assert!(!held.manifests.contains_key("openbao-a.snap"));
}

#[tokio::test]
async fn an_empty_policy_lists_and_deletes_nothing() {
    let store = MemoryStore::default();
    let old = snapshot_bytes(5_000);
    store.put(
        "openbao-a.snap",
        old.clone(),
        Some(manifest(
            "openbao-a.snap",
            &old,
            "c1",
            "2026-01-01T00:00:00Z",
        )),
    );
    let mut source = FakeSource::new(snapshot_bytes(50_000));
    let mut saved = plan_and_save(&mut source, &store, OnExisting::Keep)
        .await
        .unwrap();
    saved
        .apply_retention(&store, Policy::default(), &clock())
        .await
        .unwrap();
    assert!(saved.pruned.is_empty());
    assert_eq!(store.held().snapshots.len(), 2);
}
