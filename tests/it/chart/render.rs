//! Lint, strict schema validation, values the chart refuses, the snapshot
//! CronJob's switches, and the install notes.

use super::{
    helm, kind, kinds, one, render, strings, text, tool, try_render, validate, Values, ALL,
    ALL_OPTIONS, DEFAULTS,
};
use std::process::Command;

fn lint(values: Option<&str>) {
    let mut args = vec!["lint", ".", "--strict"];
    if let Some(file) = values {
        args.extend(["--values", file]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm lint {values:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn chart_lints_with_defaults_and_every_option() {
    lint(None);
    lint(Some(ALL_OPTIONS));
}

#[test]
fn chart_renders_the_hook_rbac_and_nothing_cluster_scoped() {
    let defaults = render(DEFAULTS);
    assert_eq!(
        kinds(&defaults),
        ["ServiceAccount", "Role", "RoleBinding", "Job"]
    );
    let all = render(ALL);
    assert_eq!(
        kinds(&all),
        [
            "ServiceAccount",
            "ServiceAccount",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "Deployment",
            "CronJob",
            "PrometheusRule",
            "ServiceMonitor",
            "Job"
        ]
    );
    // The chart never creates the credentials Secret (helm uninstall would
    // delete the keys) and never a cluster-scoped object.
    for doc in defaults.iter().chain(&all) {
        assert_ne!(kind(doc), "Secret");
        assert!(!kind(doc).starts_with("Cluster"), "{doc:?}");
        assert!(doc["metadata"]["namespace"].is_string(), "{doc:?}");
    }
}

#[test]
fn rendered_manifests_pass_strict_schema_validation() {
    validate(DEFAULTS);
    validate(ALL);
}

#[test]
fn kubernetes_validate_rejects_an_unknown_field() {
    // Proves the validation above can fail: --strict refuses a typo.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\nspec:\n  backofLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: i}]\n",
    )
    .expect("write");
    let out = Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    assert!(!out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn snapshot_cronjob_renders_only_when_enabled_with_a_writable_target() {
    assert!(!kinds(&render(DEFAULTS)).contains(&"CronJob"));
    for (set, why) in [
        // The default target is a standalone install: file storage.
        (
            &["snapshot.enabled=true", "snapshot.to=s3://b/"][..],
            "snapshot.enabled needs target.storage=raft",
        ),
        (
            &["target.storage=raft", "snapshot.enabled=true"][..],
            "snapshot.to is required",
        ),
        (
            &[
                "target.storage=raft",
                "snapshot.enabled=true",
                "snapshot.to=/data/",
            ][..],
            "root filesystem is read-only",
        ),
        (
            &[
                "target.storage=raft",
                "snapshot.enabled=true",
                "snapshot.to=/data/",
                "snapshot.persistentVolumeClaim=snaps",
            ][..],
            "must be under /snapshots",
        ),
    ] {
        let err = try_render(Values { set, ..DEFAULTS }, &[]).expect_err(why);
        assert!(err.contains(why), "{set:?}: want {why:?} in:\n{err}");
    }

    // A volume target: the claim is mounted where --to points, writable by
    // the nonroot group.
    let docs = render(Values {
        set: &[
            "target.storage=raft",
            "snapshot.enabled=true",
            "snapshot.to=file:///snapshots/vault/",
            "snapshot.persistentVolumeClaim=snaps",
        ],
        ..DEFAULTS
    });
    let cron = one(&docs, "CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][1]["persistentVolumeClaim"]["claimName"],
        "snaps"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][1]["mountPath"],
        "/snapshots"
    );
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    let args = strings(&pod["containers"][0]["args"]).join(" ");
    assert!(
        args.starts_with("snapshot save --to file:///snapshots/vault/ --keep 28 "),
        "{args}"
    );
}

#[test]
fn bad_values_are_refused_at_render_time() {
    for (set, why) in [
        (
            "keyThreshold=6",
            "keyThreshold (6) must not exceed keyShares (5)",
        ),
        ("keyThreshold=1", "keyThreshold must be at least 2"),
        ("keyShares=0", "keyShares"),
        ("hook.timeout=soon", "timeout"),
        (
            "hook.timeout=5m",
            "must be below hook.activeDeadlineSeconds (285)",
        ),
        ("target.statefulset=Vault_0", "statefulset"),
        ("target.release=Prod", "release"),
        ("target.chart=consul", "chart"),
        ("target.storage=s3", "storage"),
        // File storage (the charts' standalone default) has no raft snapshots.
        ("snapshot.enabled=true", "snapshot.enabled needs target.storage=raft"),
        ("credentials.age.recipients[0]=ssh-ed25519", "recipients"),
        ("unknownValue=1", "unknownValue"),
        ("credentials.age.identitySecret=a/b/c", "identitySecret"),
        (
            "credentials.age.recipients[0]=age1f4m6sp2p6dtzsynqkdp9qmxz0l8ree5hfmn402wu5ye8ga2q6d5s4x04xf",
            "needs credentials.age.identitySecret",
        ),
    ] {
        let err = try_render(
            Values {
                set: &[set],
                ..DEFAULTS
            },
            &[],
        )
        .expect_err(set);
        assert!(err.contains(why), "{set}: want {why:?} in:\n{err}");
    }
}

#[test]
fn notes_say_where_the_credentials_are_and_how_to_export_them() {
    let out = helm(&[
        "install",
        "bootstrap",
        ".",
        "--dry-run=client",
        "--namespace",
        "vault",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let notes = stdout
        .split_once("NOTES:")
        .map(|(_, n)| n)
        .expect("NOTES in the install output");
    assert!(
        notes.contains("Secret openbao-unseal in namespace vault"),
        "{notes}"
    );
    assert!(
        notes.contains("kubectl vault credentials export -n vault --secret-name openbao-unseal"),
        "{notes}"
    );
}

/// Every alert names only metrics the plugin produces (their names appear
/// in its sources), has a severity and a summary; the ServiceMonitor finds
/// the watcher's Service by its labels and port, and the watcher serves on
/// that port.
#[test]
fn prometheus_rules_and_the_service_monitor_fit_the_plugin() {
    let all = render(ALL);
    let mut sources = String::new();
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let rule = one(&all, "PrometheusRule");
    let rules = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        [
            "VaultPodSealed",
            "VaultSnapshotMissing",
            "VaultSnapshotNeverPushed",
            "VaultSnapshotRestoreTestFailed",
            "VaultCheckpointWaiting",
            "VaultRaftNoFailureTolerance"
        ]
    );
    let metric = regex_lite::Regex::new(r"kubectl_vault_[a-z_]+").unwrap();
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        let names: Vec<&str> = metric.find_iter(expr).map(|m| m.as_str()).collect();
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                sources.contains(&format!("\"{name}\"")),
                "{name} in `{expr}` is never produced by the plugin"
            );
        }
        assert!(
            matches!(
                r["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{r:?}"
        );
        assert!(r["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }
    assert_eq!(
        rules[0]["for"].as_str(),
        Some("10m"),
        "sealedFor is honoured"
    );
    assert!(
        rules[0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("{{ $labels.pod }}"),
        "Prometheus templates survive Helm's"
    );
    let monitor = one(&all, "ServiceMonitor");
    let service = all
        .iter()
        .find(|d| kind(d) == "Service")
        .expect("the metrics Service");
    let want = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    for (k, v) in want {
        assert_eq!(&service["metadata"]["labels"][k], v, "{k:?}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 9200);
    let deployment = one(&all, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let at = args.iter().position(|a| a == "--metrics-addr").unwrap();
    assert_eq!(args[at + 1], "0.0.0.0:9200");
    assert_eq!(container["ports"][0]["containerPort"], 9200);
    let cron = one(&all, "CronJob");
    let args =
        strings(&cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]);
    let at = args.iter().position(|a| a == "--pushgateway").unwrap();
    assert_eq!(args[at + 1], "http://pushgateway.monitoring:9091");
    // Off by default.
    let defaults = render(DEFAULTS);
    assert!(defaults
        .iter()
        .all(|d| !super::is_prometheus_operator(d) && kind(d) != "Service"));
}
