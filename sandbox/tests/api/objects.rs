//! Secrets, Leases and Events through kube-rs: CRUD, optimistic concurrency,
//! the four patch formats, 415, stringData, validation.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sandbox::Cluster;
use serde_json::json;

use crate::harness::*;

fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn secret(name: &str) -> Secret {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"team": "a"}}, "stringData": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn secrets_crud_conflicts_and_patches() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let client = c.client().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), c.namespace());
    let pp = PostParams::default();

    let s = secrets.create(&pp, &secret("s")).await.unwrap();
    assert_eq!(s.data.as_ref().unwrap()["k"], ByteString(b"v".to_vec()));
    assert!(s.string_data.is_none());
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        api_code(secrets.create(&pp, &secret("s")).await),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_code(secrets.get("nope").await),
        (404, "NotFound".into())
    );
    assert_eq!(
        secrets
            .list(&ListParams::default().labels("team=a"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(secrets
        .list(&ListParams::default().labels("team=b"))
        .await
        .unwrap()
        .items
        .is_empty());

    // Replace: stale resourceVersion conflicts, none is unconditional.
    let mut stale = s.clone();
    let mut fresh = s.clone();
    fresh
        .data
        .as_mut()
        .unwrap()
        .insert("k2".into(), ByteString(b"2".to_vec()));
    let fresh = secrets.replace("s", &pp, &fresh).await.unwrap();
    assert_ne!(fresh.metadata.resource_version, s.metadata.resource_version);
    assert_eq!(fresh.metadata.uid, s.metadata.uid);
    let e = secrets.replace("s", &pp, &stale).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict" && s.message.contains("the object has been modified")),
        "{e:?}"
    );
    stale.metadata.resource_version = None;
    secrets.replace("s", &pp, &stale).await.unwrap();

    // Four patch types.
    let merge = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"m": "merge"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merge.data.as_ref().unwrap()["m"],
        ByteString(b"merge".to_vec())
    );
    let strategic = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"st": "c3Q="}})),
        )
        .await
        .unwrap();
    assert_eq!(
        strategic.data.as_ref().unwrap()["st"],
        ByteString(b"st".to_vec())
    );
    let jp = serde_json::to_vec(&json!([{"op": "test", "path": "/data/m", "value": "bWVyZ2U="}, {"op": "remove", "path": "/data/m"}])).unwrap();
    let json_patch = |body: Vec<u8>| {
        http::Request::patch(format!("/api/v1/namespaces/{}/secrets/s", c.namespace()))
            .header("Content-Type", "application/json-patch+json")
            .body(body)
            .unwrap()
    };
    let jsonp: Secret = client.request(json_patch(jp.clone())).await.unwrap();
    assert!(!jsonp.data.as_ref().unwrap().contains_key("m"));
    assert_eq!(
        api_code(client.request::<Secret>(json_patch(jp)).await),
        (422, "Invalid".into())
    );
    let rv_guard = json!({"metadata": {"resourceVersion": s.metadata.resource_version}, "data": {"z": "eg=="}});
    assert_eq!(
        api_code(
            secrets
                .patch("s", &PatchParams::default(), &Patch::Merge(rv_guard))
                .await
        )
        .0,
        409
    );
    let applied = secrets
        .patch("applied", &PatchParams::apply("tests").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied"}, "stringData": {"a": "1"}})))
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["a"], ByteString(b"1".to_vec()));
    let reapplied = secrets
        .patch("applied", &PatchParams::apply("tests"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied"}, "stringData": {"b": "2"}})))
        .await
        .unwrap();
    assert_eq!(
        reapplied.data.unwrap().keys().collect::<Vec<_>>(),
        ["b"],
        "apply drops fields the manager stopped applying"
    );
    assert_eq!(
        api_code(
            secrets
                .patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
        )
        .0,
        404
    );

    // 415 for an unknown patch content type.
    let req = http::Request::patch(format!("/api/v1/namespaces/{}/secrets/s", c.namespace()))
        .header("Content-Type", "text/plain")
        .body(b"{}".to_vec())
        .unwrap();
    let e = client.request::<Secret>(req).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 415),
        "{e:?}"
    );

    // Invalid base64 is 422.
    let bad: Secret = serde_json::from_value(json!({"metadata": {"name": "bad"}})).unwrap();
    let mut bad = serde_json::to_value(bad).unwrap();
    bad["data"] = json!({"k": "not base64!"});
    let req = http::Request::post(format!("/api/v1/namespaces/{}/secrets", c.namespace()))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&bad).unwrap())
        .unwrap();
    let e = client.request::<Secret>(req).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 422 && s.reason == "Invalid"),
        "{e:?}"
    );

    // dryRun=All validates without storing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let planned = secrets.create(&dry, &secret("dry")).await.unwrap();
    assert_eq!(planned.data.unwrap()["k"], ByteString(b"v".to_vec()));
    assert_eq!(api_code(secrets.get("dry").await).0, 404);

    // Delete with a stale precondition conflicts; then succeeds; then 404.
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_code(secrets.delete("s", &dp).await).0, 409);
    let gone = secrets.delete("s", &DeleteParams::default()).await.unwrap();
    assert!(gone.is_right());
    assert_eq!(
        api_code(secrets.delete("s", &DeleteParams::default()).await).0,
        404
    );
}

#[tokio::test]
async fn leases_conflict_and_take_over_by_resource_version() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let pp = PostParams::default();
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    let held = leases.create(&pp, &lease).await.unwrap();
    assert_eq!(
        api_code(leases.create(&pp, &lease).await),
        (409, "AlreadyExists".into())
    );
    let mut takeover = held.clone();
    takeover.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let taken = leases.replace("lock", &pp, &takeover).await.unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // A second contender with the old resourceVersion loses.
    let mut late = held;
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    assert_eq!(
        api_code(leases.replace("lock", &pp, &late).await),
        (409, "Conflict".into())
    );
    let patched = leases
        .patch(
            "lock",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": null}})),
        )
        .await
        .unwrap();
    assert!(patched.spec.unwrap().holder_identity.is_none());
    assert_eq!(
        leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    leases
        .delete("lock", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(leases.get("lock").await).0, 404);
}

#[tokio::test]
async fn events_are_created_in_both_groups() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let client = c.client().await.unwrap();
    let core: Api<Event> = Api::namespaced(client.clone(), c.namespace());
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "openbao-0."},
        "involvedObject": {"kind": "Pod", "name": "openbao-0", "namespace": c.namespace()},
        "reason": "Unsealed", "message": "pod unsealed", "type": "Normal",
    }))
    .unwrap();
    let created = core.create(&PostParams::default(), &ev).await.unwrap();
    assert!(created.metadata.name.unwrap().starts_with("openbao-0."));
    let v1: Api<EventV1> = Api::namespaced(client, c.namespace());
    let ev1: EventV1 = serde_json::from_value(json!({
        "metadata": {"name": "init.1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "kubectl-vault", "reportingInstance": "x", "action": "Init", "reason": "Initialized", "type": "Normal",
        "regarding": {"kind": "StatefulSet", "name": "openbao"},
    }))
    .unwrap();
    v1.create(&PostParams::default(), &ev1).await.unwrap();
    assert_eq!(
        core.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let listed = v1.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].reason.as_deref(), Some("Initialized"));
}

#[tokio::test]
async fn watch_streams_added_modified_deleted() {
    use futures::StreamExt;
    use kube::api::WatchParams;
    let c = Cluster::start(one_pod()).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let pp = PostParams::default();
    secrets
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut events = secrets
        .watch(&WatchParams::default().timeout(20), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(next(&mut events).await, ("ADDED", "a".to_string()));
    secrets
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut events).await, ("ADDED", "b".to_string()));
    secrets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut events).await, ("MODIFIED", "a".to_string()));
    secrets.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(next(&mut events).await, ("DELETED", "b".to_string()));
}

async fn next(
    events: &mut (impl futures::Stream<Item = Result<kube::api::WatchEvent<Secret>, kube::Error>>
              + Unpin),
) -> (&'static str, String) {
    use futures::TryStreamExt;
    use kube::api::WatchEvent;
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), events.try_next())
        .await
        .expect("event in time")
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Added(s) => ("ADDED", s.metadata.name.unwrap()),
        WatchEvent::Modified(s) => ("MODIFIED", s.metadata.name.unwrap()),
        WatchEvent::Deleted(s) => ("DELETED", s.metadata.name.unwrap()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn apply_conflicts_with_fields_another_manager_wrote() {
    let c = Cluster::start(one_pod()).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.client().await.unwrap(), c.namespace());
    let pp = PostParams {
        field_manager: Some("creator".into()),
        ..Default::default()
    };
    secrets.create(&pp, &secret("owned")).await.unwrap();
    let cfg = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owned"}, "stringData": {"k": "changed"}});
    let e = secrets
        .patch(
            "owned",
            &PatchParams::apply("applier"),
            &Patch::Apply(cfg.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.message.contains("conflict with \"creator\": .data.k")),
        "{e:?}"
    );
    // The same value is no conflict; force takes the field over.
    let same = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owned"}, "stringData": {"k": "v"}});
    secrets
        .patch("owned", &PatchParams::apply("applier"), &Patch::Apply(same))
        .await
        .unwrap();
    let s = secrets
        .patch(
            "owned",
            &PatchParams::apply("applier").force(),
            &Patch::Apply(cfg),
        )
        .await
        .unwrap();
    assert_eq!(s.data.unwrap()["k"], ByteString(b"changed".to_vec()));
    let fields = s.metadata.managed_fields.unwrap();
    let creator = fields
        .iter()
        .find(|m| m.manager.as_deref() == Some("creator"))
        .unwrap();
    let owned = serde_json::to_string(&creator.fields_v1).unwrap();
    assert!(!owned.contains("f:data"), "creator lost data.k: {owned}");
    assert!(fields.iter().any(
        |m| m.manager.as_deref() == Some("applier") && m.operation.as_deref() == Some("Apply")
    ));
}
