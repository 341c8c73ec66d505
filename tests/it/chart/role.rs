//! The Role grants exactly what the README promises: no wildcard, no
//! cluster scope, names wherever RBAC can check them.

use super::{
    job_args, kind, kinds, one, render, strings, validate, workloads_one, Values, ALL, DEFAULTS,
};
use serde_yaml::Value;
use std::collections::BTreeSet;

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
    let mut want = beside_secrets(sts);
    for v in ["get", "update", "patch"] {
        want.insert(grant("", "secrets", v, Some(secret)));
        want.insert(grant("", "secrets", v, Some(&checkpoint)));
    }
    // Only the checkpoint is ever deleted.
    want.insert(grant("", "secrets", "delete", Some(&checkpoint)));
    want.insert(grant("", "secrets", "create", None));
    if let Some(identity) = identity {
        want.insert(grant("", "secrets", "get", Some(identity)));
    }
    want
}

/// What the hook and the workloads both may do: find and exec into the
/// pods, take the Lease, report Events, read the StatefulSet.
fn beside_secrets(sts: &str) -> BTreeSet<Grant> {
    let lease = format!("{sts}-kubectl-vault");
    let mut want = BTreeSet::new();
    for v in ["get", "list", "watch"] {
        want.insert(grant("", "pods", v, None));
    }
    for v in ["get", "create"] {
        want.insert(grant("", "pods/exec", v, None));
    }
    want.insert(grant("", "pods/log", "get", None));
    for v in ["get", "create"] {
        want.insert(grant("", "pods/portforward", v, None));
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

/// What the auto-unseal Deployment and the snapshot CronJob may do: read the
/// keys (and the identity), never create, replace or delete a Secret.
fn promised_to_workloads(sts: &str, secret: &str, identity: Option<&str>) -> BTreeSet<Grant> {
    let mut want = beside_secrets(sts);
    for name in [
        Some(secret.to_owned()),
        Some(format!("{secret}-checkpoint")),
    ]
    .into_iter()
    .chain([identity.map(str::to_owned)])
    .flatten()
    {
        want.insert(grant("", "secrets", "get", Some(&name)));
    }
    want
}

#[test]
fn the_workloads_only_read_the_keys_under_an_account_of_their_own() {
    // Without a Deployment or a CronJob there is no second account.
    assert!(!render(DEFAULTS).iter().any(super::is_workloads_rbac));
    let docs = render(ALL);
    let role = workloads_one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "vault-system");
    assert_eq!(
        grants(role),
        promised_to_workloads("openbao", "openbao-keys", Some("sops-age"))
    );
    let binding = workloads_one(&docs, "RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let sa = workloads_one(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "bootstrapper-workloads");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    assert_eq!(binding["subjects"].as_sequence().map(Vec::len), Some(1));
}

#[test]
fn role_grants_exactly_the_promised_permissions() {
    let docs = render(DEFAULTS);
    assert_eq!(
        grants(one(&docs, "Role")),
        promised("openbao", "openbao-unseal", None)
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
        promised("openbao", "openbao-unseal", None)
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
    assert_eq!(
        grants(one(&docs, "Role")),
        promised("openbao", "openbao-unseal", None)
    );
    assert_ne!(grants(&role), promised("openbao", "openbao-unseal", None));
}

/// The StatefulSet the upstream chart creates for a release (its
/// `fullname`): the release name when it contains the chart name.
fn upstream_statefulset(chart: &str, release: &str) -> String {
    if release.contains(chart) {
        release.to_owned()
    } else {
        format!("{release}-{chart}")
    }
}

#[test]
fn role_names_follow_the_upstream_release_naming() {
    for (chart, release, sts) in [
        ("openbao", "openbao", "openbao"),
        ("openbao", "prod", "prod-openbao"),
        ("openbao", "my-openbao", "my-openbao"),
        ("vault", "vault", "vault"),
        ("vault", "secrets", "secrets-vault"),
        ("vault", "vault-eu", "vault-eu"),
    ] {
        assert_eq!(upstream_statefulset(chart, release), sts);
        let chart_set = format!("target.chart={chart}");
        let release_set = format!("target.release={release}");
        let docs = render(Values {
            set: &[&chart_set, &release_set],
            ..DEFAULTS
        });
        // The names the binary derives from the StatefulSet: the Secret is
        // its own default, the checkpoint and the Lease follow from them.
        let secret = kubectl_vault::store::kube_secret::default_secret_name(sts);
        assert_eq!(
            grants(one(&docs, "Role")),
            promised(sts, &secret, None),
            "{chart} release {release}"
        );
        let args = job_args(&docs).join(" ");
        assert!(
            args.contains(&format!(
                "--selector app.kubernetes.io/name={chart},app.kubernetes.io/instance={release},component=server "
            )),
            "{args}"
        );
        assert!(args.contains(&format!("--secret-name {secret} ")), "{args}");
    }
    // fullnameOverride on the server chart: the StatefulSet is named outright.
    let docs = render(Values {
        set: &["target.release=prod", "target.statefulset=bao"],
        ..DEFAULTS
    });
    assert_eq!(
        grants(one(&docs, "Role")),
        promised("bao", "bao-unseal", None)
    );
}

#[test]
fn rendered_role_is_pinned() {
    insta::assert_yaml_snapshot!("role-defaults", one(&render(DEFAULTS), "Role"));
    insta::assert_yaml_snapshot!("role-all-options", one(&render(ALL), "Role"));
}
