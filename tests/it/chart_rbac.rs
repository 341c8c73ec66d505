//! The chart's Role is enough: the hook runs on the sandbox with the Job's
//! rendered arguments (and the HOSTNAME the kubelet sets), and every API request it made (read
//! from the sandbox's audit log) is one the rendered Role allows. Together
//! with `chart::role_grants_exactly_the_promised_permissions` (nothing more)
//! this pins the Role from both sides.

use crate::chart::{grants, job_args, one, render, Values};
use crate::harness::{plugin_binary, Env};
use sandbox::ClusterOptions;
use std::collections::BTreeSet;

/// One audited resource request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Request {
    namespace: String,
    group: String,
    resource: String,
    verb: String,
    name: String,
}

/// The RBAC checks a real API server makes for the audited requests since
/// `skip`. A WebSocket exec/attach/portforward is a GET: Kubernetes
/// authorizes it as `get` on the subresource, and since 1.35
/// (AuthorizePodWebsocketUpgradeCreatePermission) as `create` as well; the
/// sandbox records one verb, so both are derived here.
fn audited(path: &std::path::Path, skip: usize) -> Vec<Request> {
    let log = std::fs::read_to_string(path).expect("audit log");
    let mut out = Vec::new();
    for entry in log
        .lines()
        .skip(skip)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let s = |k: &str| entry[k].as_str().unwrap_or_default().to_owned();
        // Discovery and /version are non-resource URLs every authenticated
        // user may read (system:discovery); the Role is about resources.
        if s("resource").is_empty() {
            continue;
        }
        let sub = s("subresource");
        let request = Request {
            namespace: s("namespace"),
            group: s("group"),
            resource: if sub.is_empty() {
                s("resource")
            } else {
                format!("{}/{sub}", s("resource"))
            },
            verb: s("verb"),
            name: s("name"),
        };
        let streaming = matches!(sub.as_str(), "exec" | "attach" | "portforward");
        if streaming && s("method") == "GET" {
            for verb in ["get", "create"] {
                out.push(Request {
                    verb: verb.to_owned(),
                    ..request.clone()
                });
            }
        } else {
            out.push(request);
        }
    }
    out
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |l| l.lines().count())
}

/// Runs the Job's container: its args, the pod's HOSTNAME, and the
/// kubeconfig standing in for the in-cluster service-account credentials.
async fn run_job(env: &Env, args: &[String], home: &std::path::Path) -> (i32, String) {
    let out = tokio::process::Command::new(plugin_binary())
        .args(args)
        .arg("--kubeconfig")
        .arg(env.cluster.kubeconfig_path())
        .env_remove("KUBECONFIG")
        .env_remove("FAILPOINTS")
        .env("HOME", home)
        // The kubelet sets HOSTNAME to the pod name; kubectl-vault names
        // its Lease holder after it.
        .env("HOSTNAME", "bootstrap-vault-bootstrap-x7k2p")
        .current_dir(home)
        .output()
        .await
        .expect("run the hook");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The hook, as the chart's Job runs it, on `opts`: first install, then an
/// upgrade that restarted every pod; every request must be one the Role allows.
async fn hook_needs_nothing_beyond_the_rendered_role(opts: ClusterOptions) {
    let help = tokio::process::Command::new(plugin_binary())
        .arg("--help")
        .output()
        .await
        .expect("kubectl-vault --help");
    let has_hook = String::from_utf8_lossy(&help.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with("hook "));

    let env = Env::start(opts.replicas(3)).await;
    let ns = env.cluster.namespace().to_owned();
    let target_ns = format!("target.namespace={ns}");
    let sts = format!("target.statefulset={}", env.cluster.name());
    let set = [
        target_ns.as_str(),
        sts.as_str(),
        "keyShares=3",
        "keyThreshold=2",
    ];
    let docs = render(Values {
        namespace: "helm-release",
        file: None,
        set: &set,
    });
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], ns.as_str());
    let allowed = grants(role);
    let mut args = job_args(&docs);
    if !has_hook {
        // `hook` takes init's arguments; until it exists, run init the way
        // the hook would: no prompts.
        eprintln!("note: kubectl-vault has no `hook` subcommand yet; running `init --yes --non-interactive` with the Job's args");
        args[0] = "init".to_owned();
        args.extend(["--yes".to_owned(), "--non-interactive".to_owned()]);
    }

    let home = tempfile::tempdir().expect("tempdir");
    let audit = env.cluster.audit_log_path();
    let mut requests = BTreeSet::new();
    // First install, then an upgrade after every pod restarted (sealed).
    for round in ["install", "upgrade after restart"] {
        if round != "install" {
            env.cluster.restart_all().await.expect("restart all");
        }
        let before = lines(&audit);
        let (code, stderr) = run_job(&env, &args, home.path()).await;
        assert_eq!(code, 0, "hook ({round}) failed:\n{stderr}");
        env.assert_whole(3).await;
        requests.extend(audited(&audit, before));
    }

    let denied: Vec<&Request> = requests
        .iter()
        .filter(|r| {
            let name = (!r.name.is_empty()).then(|| r.name.clone());
            let key = |n: Option<String>| (r.group.clone(), r.resource.clone(), r.verb.clone(), n);
            r.namespace != ns
                || !(allowed.contains(&key(None))
                    || (name.is_some() && allowed.contains(&key(name))))
        })
        .collect();
    assert!(
        denied.is_empty(),
        "the rendered Role would deny these requests of the hook:\n{denied:#?}\nRole grants: {allowed:#?}"
    );
    // The run did exercise the Role: exec, the Secret and the Lease, and
    // the hook's Events on the StatefulSet.
    let mut exercised = vec!["pods/exec", "secrets", "leases"];
    if has_hook {
        exercised.push("events");
    }
    for resource in exercised {
        assert!(
            requests.iter().any(|r| r.resource == resource),
            "no {resource} request audited: {requests:#?}"
        );
    }
}

#[tokio::test]
async fn hook_on_parallel_vault_needs_nothing_beyond_the_rendered_role() {
    hook_needs_nothing_beyond_the_rendered_role(ClusterOptions::vault().parallel()).await;
}

#[tokio::test]
async fn hook_on_ordered_ready_openbao_needs_nothing_beyond_the_rendered_role() {
    hook_needs_nothing_beyond_the_rendered_role(ClusterOptions::openbao().ordered_ready()).await;
}
