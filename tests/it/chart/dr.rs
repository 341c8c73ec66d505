//! The chart's DR pieces: a `dr sync` CronJob and a `dr watch` Deployment
//! over a DRGroup ConfigMap, off by default, reaching the members through
//! a kubeconfig Secret and nothing of the cluster they run in.

use super::{kinds, render, strings, try_render, validate, Values, DEFAULTS};
use serde_yaml::Value;

const DR_VALUES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/chart/dr-values.yaml");

const DR: Values<'static> = Values {
    namespace: "dr",
    file: Some(DR_VALUES),
    set: &[],
};

fn named<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} named *{suffix}"))
}

#[test]
fn dr_pieces_render_only_when_enabled_and_refuse_a_missing_group_or_kubeconfig() {
    let defaults = render(DEFAULTS);
    assert!(!kinds(&defaults).contains(&"ConfigMap"));
    assert!(!kinds(&defaults).contains(&"CronJob"));
    assert!(!kinds(&defaults).contains(&"Deployment"));
    for (set, why) in [
        (&["dr.sync.enabled=true"][..], "dr.group is required"),
        (
            &["dr.watch.enabled=true", "dr.group.kind=Group"][..],
            "dr.group.kind must be DRGroup",
        ),
        (
            &["dr.watch.enabled=true", "dr.group.kind=DRGroup"][..],
            "dr.kubeconfigSecret is required",
        ),
        (&["dr.watch.failureThreshold=0"][..], "failureThreshold"),
        (&["dr.sync.schedules=x"][..], "schedules"),
    ] {
        let err = try_render(Values { set, ..DEFAULTS }, &[]).expect_err(why);
        assert!(err.contains(why), "{set:?}: want {why:?} in:\n{err}");
    }
}

#[test]
fn dr_sync_cronjob_and_watch_deployment_run_the_group_file_through_the_kubeconfig() {
    let docs = render(DR);
    let config = named(&docs, "ConfigMap", "-dr");
    let text = config["data"]["dr.yaml"].as_str().expect("dr.yaml");
    // The plugin's own parser takes the rendered file.
    let group = kubectl_vault::ops::dr::config::DrGroup::parse(text, "dr.yaml")
        .unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!(group.name, "prod");
    assert_eq!(group.names(), ["east", "west"]);
    assert_eq!(group.snapshots, "s3://vault-dr/prod/");

    let cron = named(&docs, "CronJob", "-dr-sync");
    assert_eq!(cron["spec"]["schedule"], "45 */6 * * *");
    assert_eq!(cron["spec"]["timeZone"], "Europe/Berlin");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let sync_pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        strings(&sync_pod["containers"][0]["args"]).join(" "),
        "dr sync --config /etc/kubectl-vault/dr/dr.yaml --non-interactive --no-progress"
    );
    let deploy = named(&docs, "Deployment", "-dr-watch");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let watch_pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(
        strings(&watch_pod["containers"][0]["args"]).join(" "),
        "dr watch --config /etc/kubectl-vault/dr/dr.yaml --interval 15s --failure-threshold 4 --metrics-addr :9103 --non-interactive --no-progress"
    );
    assert_eq!(
        watch_pod["containers"][0]["ports"][0]["containerPort"],
        9103
    );
    for pod in [sync_pod, watch_pod] {
        assert_eq!(pod["automountServiceAccountToken"], false, "{pod:?}");
        assert!(pod["serviceAccountName"].is_null(), "{pod:?}");
        let c = &pod["containers"][0];
        assert_eq!(c["env"][0]["name"], "KUBECONFIG");
        assert_eq!(c["env"][0]["value"], "/etc/kubectl-vault/kubeconfig/config");
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "dr-env");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let volumes = &pod["volumes"];
        assert_eq!(volumes[1]["configMap"]["name"], config["metadata"]["name"]);
        assert_eq!(volumes[2]["secret"]["secretName"], "dr-kubeconfig");
    }
    // No Role, binding or account of its own: the members are reached
    // through the kubeconfig only.
    let hook_only = render(Values {
        set: &["target.storage=raft"],
        ..DEFAULTS
    });
    let count = |docs: &[Value], k: &str| docs.iter().filter(|d| d["kind"] == k).count();
    for k in ["Role", "RoleBinding", "ServiceAccount"] {
        assert_eq!(count(&docs, k), count(&hook_only, k), "{k}");
    }
}

#[test]
fn dr_pieces_lint_and_pass_strict_schema_validation() {
    validate(DR);
    let out = super::helm(&["lint", ".", "--strict", "--values", DR_VALUES]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
