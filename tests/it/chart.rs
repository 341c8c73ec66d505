//! The vault-bootstrap chart (`helm-hooks/`) checked with the real helm and
//! kubernetes-validate that `scripts/install-deps` puts in `.deps/bin`: lint,
//! render, strict schema validation, the pinned Job and Role, the Role's exact
//! grants, and the Job's command line against the real binary.
//!
//! Running the hook itself under the rendered Role lives in `chart_rbac`.

use crate::harness::{deps_bin, plugin_binary};
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every option switched on (except the snapshot placeholder).
pub const ALL_OPTIONS: &str = "ci/all-options-values.yaml";

pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm-hooks")
}

/// A real tool from `.deps/bin`; a missing one is a set-up error, not a skip.
pub fn tool(name: &str) -> PathBuf {
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
pub struct Values<'a> {
    pub namespace: &'a str,
    pub file: Option<&'a str>,
    pub set: &'a [&'a str],
}

pub const DEFAULTS: Values<'static> = Values {
    namespace: "vault",
    file: None,
    set: &[],
};

pub const ALL: Values<'static> = Values {
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
pub fn try_render(values: Values<'_>, extra: &[&str]) -> Result<String, String> {
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

pub fn render(values: Values<'_>) -> Vec<Value> {
    let yaml = try_render(values, &[]).unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
    documents(&yaml)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// The only object of `kind`.
pub fn one<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == wanted).collect();
    assert_eq!(found.len(), 1, "want exactly one {wanted}, got {found:?}");
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
pub fn job_args(docs: &[Value]) -> Vec<String> {
    strings(&one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["args"])
}

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
        ["ServiceAccount", "Role", "RoleBinding", "Deployment", "Job"]
    );
    // The chart never creates the credentials Secret (helm uninstall would
    // delete the keys) and never a cluster-scoped object.
    for doc in defaults.iter().chain(&all) {
        assert_ne!(kind(doc), "Secret");
        assert!(!kind(doc).starts_with("Cluster"), "{doc:?}");
        assert!(doc["metadata"]["namespace"].is_string(), "{doc:?}");
    }
}

/// kubernetes-validate --strict against the chart's oldest supported
/// Kubernetes and the newest; its schemas ship in the wheel (no network).
fn validate(values: Values<'_>) {
    for version in ["1.25.0", "1.37.0"] {
        let yaml = try_render(values, &["--kube-version", version])
            .unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
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
fn snapshot_cronjob_is_a_placeholder_that_renders_nothing() {
    let docs = render(DEFAULTS);
    assert!(!kinds(&docs).contains(&"CronJob"));
    let err = try_render(
        Values {
            set: &["snapshot.enabled=true"],
            ..DEFAULTS
        },
        &[],
    )
    .expect_err("snapshot.enabled=true must not render a CronJob for a missing command");
    assert!(err.contains("snapshot"), "{err}");
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
fn job_is_a_restricted_post_install_and_upgrade_hook() {
    for values in [DEFAULTS, ALL] {
        let docs = render(values);
        let job = one(&docs, "Job");
        let annotations = &job["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/hook"], "post-install,post-upgrade");
        assert_eq!(
            annotations["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded"
        );
        assert!(annotations["helm.sh/hook-weight"].is_string());
        assert!(job["metadata"]["ownerReferences"].is_null());
        let spec = &job["spec"];
        assert!(spec["backoffLimit"].as_u64().is_some());
        assert!(spec["activeDeadlineSeconds"].as_u64().unwrap_or(0) > 0);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
        assert_eq!(
            pod["serviceAccountName"],
            one(&docs, "ServiceAccount")["metadata"]["name"]
        );
    }
}

#[test]
fn job_arguments_follow_the_values() {
    let args = job_args(&render(DEFAULTS));
    assert_eq!(
        args,
        [
            "hook",
            "--namespace",
            "vault",
            "--selector",
            kubectl_vault::transport::discover::DEFAULT_SELECTOR,
            "--secret-name",
            // The chart spells out the binary's own default.
            &kubectl_vault::store::kube_secret::default_secret_name("vault"),
            "--log-format",
            "json",
            "--key-shares",
            "5",
            "--key-threshold",
            "3",
            "--timeout",
            "4m",
        ]
    );
    let args = job_args(&render(ALL)).join(" ");
    for part in [
        "--namespace vault-system",
        "--secret-name openbao-keys",
        "--key-shares 7 --key-threshold 4",
        "--timeout 9m",
        "--age-identity-secret sops-age",
    ] {
        assert!(args.contains(part), "{part:?} not in {args}");
    }
    assert_eq!(args.matches("--age-recipient age1").count(), 2, "{args}");
}

fn help_lists(binary_help: &str, command: &str) -> bool {
    binary_help
        .lines()
        .any(|l| l.trim_start().starts_with(&format!("{command} ")))
}

/// Runs the binary with `args` then `--help`: clap parses and validates every
/// flag and value before `--help` answers, without running the command.
fn parses(args: &[String]) -> Output {
    Command::new(plugin_binary())
        .args(args)
        .arg("--help")
        .output()
        .expect("run kubectl-vault with the rendered args")
}

/// The Job's and the auto-unseal Deployment's rendered args parse with the
/// real binary.
#[test]
fn rendered_args_parse_with_the_real_binary() {
    let top = Command::new(plugin_binary())
        .arg("--help")
        .output()
        .expect("run kubectl-vault --help");
    let top = text(&top.stdout);
    let all = render(ALL);
    let mut commands = vec![strings(
        &one(&all, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"],
    )];
    if help_lists(&top, "hook") {
        commands.push(job_args(&render(DEFAULTS)));
        commands.push(job_args(&all));
    } else {
        eprintln!("note: kubectl-vault has no `hook` subcommand yet; not checking the Job's args");
    }
    for args in commands {
        let help = Command::new(plugin_binary())
            .arg(&args[0])
            .arg("--help")
            .output()
            .expect("run kubectl-vault <cmd> --help");
        let known = text(&help.stdout);
        // The age flags arrive with SOPS support; until the binary has them,
        // say so instead of failing on a flag the chart is ahead on.
        let (pending, args) = strip_unknown_age_flags(&args, &known);
        if !pending.is_empty() {
            eprintln!(
                "note: kubectl-vault {} has no {pending:?} yet; not passing them",
                args[0]
            );
        }
        let out = parses(&args);
        assert!(
            out.status.success(),
            "kubectl-vault rejects the chart's args {args:?}:\n{}",
            text(&out.stderr)
        );
    }

    // The check can fail: an unknown flag or a bad value is refused.
    for bad in [["unseal", "--no-such-flag"], ["unseal", "--interval=soon"]] {
        let bad: Vec<String> = bad.iter().map(|s| (*s).to_owned()).collect();
        assert!(!parses(&bad).status.success(), "{bad:?} parsed");
    }
}

/// Removes `--age-*` flags (and their values) that `help` does not list.
fn strip_unknown_age_flags(args: &[String], help: &str) -> (Vec<String>, Vec<String>) {
    let mut pending = Vec::new();
    let mut kept = Vec::new();
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if a.starts_with("--age-") && !help.contains(a.as_str()) {
            pending.push(a.clone());
            iter.next();
        } else {
            kept.push(a.clone());
        }
    }
    pending.dedup();
    (pending, kept)
}

/// One RBAC permission: (apiGroup, resource, verb, resourceName or any).
pub type Grant = (String, String, String, Option<String>);

pub fn grants(role: &Value) -> BTreeSet<Grant> {
    assert_eq!(role["kind"], "Role", "namespaced Role only");
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let keys: BTreeSet<&str> = rule
            .as_mapping()
            .expect("rule")
            .keys()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            keys.is_subset(&BTreeSet::from([
                "apiGroups",
                "resources",
                "verbs",
                "resourceNames"
            ])),
            "unexpected rule fields (nonResourceURLs?): {keys:?}"
        );
        let names = strings(&rule["resourceNames"]);
        let names: Vec<Option<String>> = if names.is_empty() {
            vec![None]
        } else {
            names.into_iter().map(Some).collect()
        };
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    for n in &names {
                        for part in [&g, &r, &v] {
                            assert!(!part.contains('*'), "wildcard in {rule:?}");
                        }
                        out.insert((g.clone(), r.clone(), v.clone(), n.clone()));
                    }
                }
            }
        }
    }
    out
}

fn grant(g: &str, r: &str, v: &str, name: Option<&str>) -> Grant {
    (g.into(), r.into(), v.into(), name.map(Into::into))
}

/// The permissions the README promises, for a StatefulSet, a Secret name and
/// an optional age identity Secret.
fn promised(sts: &str, secret: &str, identity: Option<&str>) -> BTreeSet<Grant> {
    let checkpoint = format!("{secret}-checkpoint");
    let lease = format!("{sts}-kubectl-vault");
    let mut want = BTreeSet::new();
    for v in ["get", "list", "watch"] {
        want.insert(grant("", "pods", v, None));
    }
    for v in ["get", "create"] {
        want.insert(grant("", "pods/exec", v, None));
    }
    for v in ["get", "update", "patch", "delete"] {
        want.insert(grant("", "secrets", v, Some(secret)));
        want.insert(grant("", "secrets", v, Some(&checkpoint)));
    }
    want.insert(grant("", "secrets", "create", None));
    if let Some(identity) = identity {
        want.insert(grant("", "secrets", "get", Some(identity)));
    }
    for v in ["get", "update", "delete"] {
        want.insert(grant("coordination.k8s.io", "leases", v, Some(&lease)));
    }
    want.insert(grant("coordination.k8s.io", "leases", "create", None));
    want.insert(grant("", "events", "create", None));
    want.insert(grant("events.k8s.io", "events", "create", None));
    want.insert(grant("apps", "statefulsets", "get", Some(sts)));
    want
}

#[test]
fn role_grants_exactly_the_promised_permissions() {
    let docs = render(DEFAULTS);
    assert_eq!(
        grants(one(&docs, "Role")),
        promised("vault", "vault-unseal", None)
    );
    let docs = render(ALL);
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "vault-system");
    assert_eq!(
        grants(role),
        promised("openbao", "openbao-keys", Some("sops-age"))
    );

    // Bound to the chart's ServiceAccount, across namespaces when the
    // target is elsewhere.
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "vault-system");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    assert_eq!(
        binding["subjects"].as_sequence().map(Vec::len),
        Some(1),
        "one subject"
    );
}

/// The Role in namespace `ns`.
fn role_in<'a>(docs: &'a [Value], ns: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == "Role" && d["metadata"]["namespace"] == ns)
        .collect();
    assert_eq!(found.len(), 1, "want one Role in {ns}: {found:?}");
    found[0]
}

#[test]
fn identity_secret_in_another_namespace_gets_its_own_read_only_role() {
    let docs = render(Values {
        set: &["credentials.age.identitySecret=flux-system/sops-age"],
        ..DEFAULTS
    });
    assert_eq!(
        kinds(&docs),
        [
            "ServiceAccount",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Job"
        ]
    );
    // The target namespace's Role is unchanged; the other one can read that
    // one Secret and nothing else.
    assert_eq!(
        grants(role_in(&docs, "vault")),
        promised("vault", "vault-unseal", None)
    );
    assert_eq!(
        grants(role_in(&docs, "flux-system")),
        BTreeSet::from([grant("", "secrets", "get", Some("sops-age"))])
    );
    let binding = docs
        .iter()
        .find(|d| kind(d) == "RoleBinding" && d["metadata"]["namespace"] == "flux-system")
        .expect("a RoleBinding in flux-system");
    assert_eq!(
        binding["roleRef"]["name"],
        role_in(&docs, "flux-system")["metadata"]["name"]
    );
    assert_eq!(binding["subjects"][0]["namespace"], "vault");
    let args = job_args(&docs).join(" ");
    assert!(
        args.contains("--age-identity-secret flux-system/sops-age"),
        "{args}"
    );
    validate(Values {
        set: &["credentials.age.identitySecret=flux-system/sops-age"],
        ..DEFAULTS
    });
}

#[test]
fn role_check_notices_an_extra_permission() {
    // The comparison above is exact: a broader Role does not pass.
    let docs = render(DEFAULTS);
    let mut role = one(&docs, "Role").clone();
    if let Some(rules) = role["rules"].as_sequence_mut() {
        rules.push(
            serde_yaml::from_str("{apiGroups: [''], resources: [secrets], verbs: [list]}")
                .expect("rule"),
        );
    }
    assert_ne!(grants(&role), promised("vault", "vault-unseal", None));
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
        notes.contains("Secret vault-unseal in namespace vault"),
        "{notes}"
    );
    assert!(
        notes.contains("kubectl vault credentials export -n vault --secret-name vault-unseal"),
        "{notes}"
    );
}

#[test]
fn rendered_job_is_pinned() {
    insta::assert_yaml_snapshot!("job-defaults", one(&render(DEFAULTS), "Job"));
    insta::assert_yaml_snapshot!("job-all-options", one(&render(ALL), "Job"));
}

#[test]
fn rendered_role_is_pinned() {
    insta::assert_yaml_snapshot!("role-defaults", one(&render(DEFAULTS), "Role"));
    insta::assert_yaml_snapshot!("role-all-options", one(&render(ALL), "Role"));
}
