//! The vault-bootstrap chart (`helm-hooks/`), checked with the real helm and
//! kubernetes-validate that `scripts/install-deps` puts in `.deps/bin`, and
//! run on the sandbox. This module renders; the tests are split by noun:
//! `render` (lint, schema validation, refused values, notes), `workloads`
//! (the Job, Deployment and CronJob: security, arguments, pinned output),
//! `role` (the Role's exact grants) and `sandbox` (the hook and snapshot
//! commands under the rendered Role against real OpenBao pods).

mod dr;
mod render;
mod role;
mod sandbox;
mod workloads;

use crate::harness::deps_bin;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every option switched on.
const ALL_OPTIONS: &str = "ci/all-options-values.yaml";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm-hooks")
}

/// A real tool from `.deps/bin`; a missing one is a set-up error, not a skip.
fn tool(name: &str) -> PathBuf {
    let path = deps_bin().join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps",
        path.display()
    );
    path
}

/// Runs helm in the chart directory with a throwaway home, so it neither
/// reads nor writes the user's Helm or kube configuration.
fn helm(args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    Command::new(tool("helm"))
        .args(args)
        .current_dir(chart_dir())
        .env("HOME", home.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .output()
        .expect("run helm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What to render: release namespace, an optional values file, `--set`s.
#[derive(Clone, Copy)]
struct Values<'a> {
    namespace: &'a str,
    file: Option<&'a str>,
    set: &'a [&'a str],
}

const DEFAULTS: Values<'static> = Values {
    namespace: "vault",
    file: None,
    set: &[],
};

const ALL: Values<'static> = Values {
    namespace: "ops",
    file: Some(ALL_OPTIONS),
    set: &[],
};

impl Values<'_> {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--namespace".to_owned(), self.namespace.to_owned()];
        if let Some(file) = self.file {
            args.extend(["--values".to_owned(), file.to_owned()]);
        }
        for s in self.set {
            args.extend(["--set".to_owned(), (*s).to_owned()]);
        }
        args
    }
}

/// `helm template`; Err carries helm's stderr.
fn try_render(values: Values<'_>, extra: &[&str]) -> Result<String, String> {
    let vargs = values.args();
    let mut args = vec!["template", "bootstrap", "."];
    args.extend(vargs.iter().map(String::as_str));
    args.extend(extra);
    let out = helm(&args);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

fn render(values: Values<'_>) -> Vec<Value> {
    let yaml = try_render(values, &[]).unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
    documents(&yaml)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A prometheus-operator object (ServiceMonitor, PrometheusRule).
fn is_prometheus_operator(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// Whether `doc` belongs to the long-running workloads' account (the
/// auto-unseal Deployment's and the snapshot CronJob's RBAC).
fn is_workloads_rbac(doc: &Value) -> bool {
    doc["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.ends_with("-workloads"))
}

/// The only object of `kind` that is not the workloads' RBAC: for
/// ServiceAccount, Role and RoleBinding, the hook's.
fn one<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == wanted && !is_workloads_rbac(d))
        .collect();
    assert_eq!(found.len(), 1, "want exactly one {wanted}, got {found:?}");
    found[0]
}

/// The workloads' only object of `kind` (ServiceAccount, Role, RoleBinding).
fn workloads_one<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == wanted && is_workloads_rbac(d))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want exactly one workloads {wanted}, got {found:?}"
    );
    found[0]
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(kind).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The container args of the hook Job, as the kubelet would pass them.
fn job_args(docs: &[Value]) -> Vec<String> {
    strings(&one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["args"])
}

/// kubernetes-validate --strict against the chart's oldest supported
/// Kubernetes and the newest; its schemas ship in the wheel (no network).
fn validate(values: Values<'_>) {
    for version in ["1.25.0", "1.37.0"] {
        let yaml = try_render(values, &["--kube-version", version])
            .unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
        // prometheus-operator's kinds have no schema there: checked by
        // `render::prometheus_rules_and_the_service_monitor_fit_the_plugin`.
        let core: Vec<Value> = documents(&yaml)
            .into_iter()
            .filter(|d| !is_prometheus_operator(d))
            .collect();
        let yaml: String = core
            .iter()
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).expect("yaml")))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, &yaml).expect("write rendered manifests");
        let out = Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate {version} failed:\n{report}"
        );
        // One "passed" line per object: it did validate them all.
        let passed = report.matches(" passed ").count();
        assert_eq!(passed, documents(&yaml).len(), "{report}");
    }
}
