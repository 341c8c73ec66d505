//! The chart's Role is enough: the hook runs on the sandbox with the Job's
//! rendered arguments (and the HOSTNAME the kubelet sets), then the
//! auto-unseal Deployment's and the snapshot CronJob's commands, and every
//! API request they made (read from the sandbox's audit log) is one the
//! rendered Role allows. With
//! `role::role_grants_exactly_the_promised_permissions` (nothing more) this
//! pins the Role from both sides.

use super::role::{grants, Grant};
use super::{job_args, one, render, workloads_one, Values};
use crate::harness::{deps_bin, plugin_binary, Env};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use sandbox::ClusterOptions;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
fn audited(path: &Path, skip: usize) -> Vec<Request> {
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

/// Every request was in namespace `ns` and one the Role's grants allow.
fn assert_all_allowed(requests: &BTreeSet<Request>, allowed: &BTreeSet<Grant>, ns: &str) {
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
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |l| l.lines().count())
}

/// Runs the Job's container: its args, the pod's HOSTNAME, and the
/// kubeconfig standing in for the in-cluster service-account credentials.
fn container(env: &Env, args: &[String], home: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(plugin_binary());
    command
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
        .kill_on_drop(true);
    command
}

async fn run_job(env: &Env, args: &[String], home: &Path) -> (i32, String) {
    let out = container(env, args, home)
        .output()
        .await
        .expect("run the hook");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `kubectl-vault --help` lists `command`.
async fn has_subcommand(command: &str) -> bool {
    let help = tokio::process::Command::new(plugin_binary())
        .arg("--help")
        .output()
        .await
        .expect("kubectl-vault --help");
    String::from_utf8_lossy(&help.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with(&format!("{command} ")))
}

fn strings_of(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .expect("a list")
        .iter()
        .map(|x| x.as_str().expect("a string").to_owned())
        .collect()
}

/// An age key made by the real `age-keygen`, and the Flux-style Secret
/// (`sops-age`, data key `age.agekey`) the chart points the hook at.
struct AgeKey {
    file: PathBuf,
    recipient: String,
}

async fn age_key(env: &Env, dir: &Path) -> AgeKey {
    let file = dir.join("ops.agekey");
    let status = std::process::Command::new(deps_bin().join("age-keygen"))
        .arg("-o")
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run age-keygen");
    assert!(status.success());
    let text = std::fs::read_to_string(&file).expect("key file");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_owned();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("sops-age".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "age.agekey".to_owned(),
            ByteString(text.into_bytes()),
        )])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(env.client().await, env.cluster.namespace())
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the identity Secret");
    AgeKey { file, recipient }
}

/// Every pod unsealed and the stored credentials readable: plaintext through
/// the harness, encrypted through the real `sops` with the age key.
async fn assert_bootstrapped(env: &Env, age: Option<&AgeKey>) {
    let Some(age) = age else {
        env.assert_whole(3).await;
        return;
    };
    for i in 0..3 {
        let s = env.seal_status(i).await;
        assert_eq!(s["sealed"], false, "pod {i} unsealed: {s}");
    }
    let creds = env
        .stored_credentials_sops(&age.file)
        .await
        .expect("encrypted credentials stored");
    assert!(creds["root_token"].is_string(), "decrypted by sops");
    env.assert_no_secret_exposed_in(&creds).await;
}

/// The hook, as the chart's Job runs it, on `opts`: first install, then an
/// upgrade that restarted every pod; every request must be one the Role
/// allows. With `encrypted`, the chart's age values are set: the keys are
/// stored for a recipient and read back through the identity Secret.
async fn hook_needs_nothing_beyond_the_rendered_role(opts: ClusterOptions, encrypted: bool) {
    let has_hook = has_subcommand("hook").await;

    let chart = opts.flavour.app_name();
    let release = opts.instance().to_owned();
    let env = Env::start(opts.replicas(3)).await;
    let home = tempfile::tempdir().expect("tempdir");
    let age = if encrypted {
        Some(age_key(&env, home.path()).await)
    } else {
        None
    };
    let ns = env.cluster.namespace().to_owned();
    let mut set = vec![
        format!("target.namespace={ns}"),
        // Named the way the upstream chart names a release: the Role's
        // names are derived from these, the binary's from the pods.
        format!("target.chart={chart}"),
        format!("target.release={release}"),
        "target.storage=raft".to_owned(),
        "keyShares=3".to_owned(),
        "keyThreshold=2".to_owned(),
        // The CronJob's target is swapped for a local folder below.
        "snapshot.enabled=true".to_owned(),
        "autoUnseal.enabled=true".to_owned(),
        "autoUnseal.interval=1s".to_owned(),
        "snapshot.to=s3://unused/".to_owned(),
    ];
    // One variant (the Vault flavour, whose CLI reads VAULT_ADDR) also runs
    // the CronJob's restore-test under the rendered Role.
    let restore_test = !encrypted && chart == "vault";
    if restore_test {
        set.push("snapshot.verifyRestore=true".to_owned());
    }
    if let Some(age) = &age {
        set.push(format!("credentials.age.recipients[0]={}", age.recipient));
        set.push("credentials.age.identitySecret=sops-age".to_owned());
    }
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    let docs = render(Values {
        namespace: "helm-release",
        file: None,
        set: &set,
    });
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], ns.as_str());
    let allowed = grants(role);
    // The auto-unseal Deployment and the snapshot CronJob run under their
    // own, read-only Role.
    let workloads_allowed = grants(workloads_one(&docs, "Role"));
    let mut workload_requests = BTreeSet::new();
    let mut args = job_args(&docs);
    if !has_hook {
        // `hook` takes init's arguments; until it exists, run init the way
        // the hook would: no prompts.
        eprintln!("note: kubectl-vault has no `hook` subcommand yet; running `init --yes --non-interactive` with the Job's args");
        args[0] = "init".to_owned();
        args.extend(["--yes".to_owned(), "--non-interactive".to_owned()]);
    }

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
        requests.extend(audited(&audit, before));
        assert_bootstrapped(&env, age.as_ref()).await;
    }

    // The auto-unseal Deployment's command: every pod restarts, it unseals
    // them all, and keeps watching until the pod is deleted.
    env.cluster.restart_all().await.expect("restart all");
    let deployment =
        strings_of(&one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    let before = lines(&audit);
    let mut watcher = container(&env, &deployment, home.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start unseal --watch");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let mut sealed = 0;
        for i in 0..3 {
            if env.seal_status(i).await["sealed"] != false {
                sealed += 1;
            }
        }
        if sealed == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unseal --watch left {sealed} pods sealed"
        );
        assert!(
            watcher.try_wait().expect("poll").is_none(),
            "unseal --watch exited early"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    watcher.kill().await.expect("stop unseal --watch");
    workload_requests.extend(audited(&audit, before));

    // The snapshot CronJob's command, into a local folder instead of S3.
    if has_subcommand("snapshot").await {
        let mut args = strings_of(
            &one(&docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
                [0]["args"],
        );
        let to = args.iter().position(|a| a == "--to").expect("--to") + 1;
        args[to] = format!("{}/", home.path().join("snapshots").display());
        let before = lines(&audit);
        let (code, stderr) = run_job(&env, &args, home.path()).await;
        assert_eq!(code, 0, "snapshot save failed:\n{stderr}");
        workload_requests.extend(audited(&audit, before));
        let saved = std::fs::read_dir(home.path().join("snapshots"))
            .expect("snapshot folder")
            .count();
        assert!(saved >= 2, "a snapshot and its manifest: {saved} files");
        if restore_test {
            assert!(args.iter().any(|a| a == "--restore-test"), "{args:?}");
            let manifest = std::fs::read_dir(home.path().join("snapshots"))
                .expect("snapshot folder")
                .map(|e| e.expect("entry").path())
                .find(|p| p.to_string_lossy().ends_with(".snap.json"))
                .expect("a manifest");
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(manifest).expect("manifest"))
                    .expect("manifest JSON");
            assert_eq!(
                manifest["restore_test"]["result"], "passed",
                "{manifest}\n{stderr}"
            );
        }
    } else {
        eprintln!("note: kubectl-vault has no `snapshot` subcommand yet; not running the CronJob's command");
    }

    assert_all_allowed(&requests, &allowed, &ns);
    assert_all_allowed(&workload_requests, &workloads_allowed, &ns);
    for resource in ["pods/exec", "pods/portforward", "secrets", "leases"] {
        assert!(
            workload_requests.iter().any(|r| r.resource == resource),
            "no {resource} request of the workloads audited: {workload_requests:#?}"
        );
    }
    let requests: BTreeSet<_> = requests.union(&workload_requests).cloned().collect();
    // The run did exercise the Role: exec, the Secret and the Lease, the
    // hook's Events on the StatefulSet, and the identity Secret.
    let mut exercised = vec!["pods/exec", "pods/portforward", "secrets", "leases"];
    if has_hook {
        exercised.push("events");
    }
    for resource in exercised {
        assert!(
            requests.iter().any(|r| r.resource == resource),
            "no {resource} request audited: {requests:#?}"
        );
    }
    if age.is_some() {
        assert!(
            requests
                .iter()
                .any(|r| r.resource == "secrets" && r.verb == "get" && r.name == "sops-age"),
            "the identity Secret was never read: {requests:#?}"
        );
    }
}

#[tokio::test]
async fn hook_on_parallel_vault_needs_nothing_beyond_the_rendered_role() {
    hook_needs_nothing_beyond_the_rendered_role(ClusterOptions::vault().parallel(), false).await;
}

#[tokio::test]
async fn hook_on_ordered_ready_openbao_needs_nothing_beyond_the_rendered_role() {
    // A release not named after the chart (StatefulSet `prod-openbao`) and
    // generated node ids, as the openbao chart installs by default.
    hook_needs_nothing_beyond_the_rendered_role(
        ClusterOptions::openbao()
            .ordered_ready()
            .release("prod")
            .set_node_id(false),
        false,
    )
    .await;
}

#[tokio::test]
async fn hook_with_age_encryption_needs_nothing_beyond_the_rendered_role() {
    hook_needs_nothing_beyond_the_rendered_role(ClusterOptions::vault().parallel(), true).await;
}

/// The chart's defaults next to a default `helm install openbao
/// openbao/openbao`: one standalone server on file storage. The hook
/// initializes and unseals it without waiting for a leader, on first install
/// and after a restart, within the rendered Role.
#[tokio::test]
async fn hook_on_a_default_standalone_openbao_needs_nothing_beyond_the_rendered_role() {
    let env = Env::start(ClusterOptions::openbao().release("openbao").standalone()).await;
    let home = tempfile::tempdir().expect("tempdir");
    let ns = env.cluster.namespace().to_owned();
    let target = format!("target.namespace={ns}");
    let docs = render(Values {
        namespace: "helm-release",
        file: None,
        set: &[&target],
    });
    let allowed = grants(one(&docs, "Role"));
    assert!(
        !docs.iter().any(|d| d["kind"] == "CronJob"),
        "no snapshot CronJob on file storage"
    );
    let args = job_args(&docs);
    let audit = env.cluster.audit_log_path();
    let mut requests = BTreeSet::new();
    for round in ["install", "upgrade after restart"] {
        if round != "install" {
            env.cluster.restart_pod(0).await.expect("restart");
            assert_eq!(env.seal_status(0).await["sealed"], true);
        }
        let before = lines(&audit);
        let (code, stderr) = run_job(&env, &args, home.path()).await;
        assert_eq!(code, 0, "hook ({round}) failed:\n{stderr}");
        requests.extend(audited(&audit, before));
        let s = env.seal_status(0).await;
        assert_eq!(s["sealed"], false, "{round}: {s}");
        assert_eq!(s["storage_type"], "file", "{s}");
    }
    assert!(env.stored_credentials().await.is_some());
    assert_all_allowed(&requests, &allowed, &ns);
    for resource in ["pods/exec", "pods/portforward", "secrets", "leases"] {
        assert!(
            requests.iter().any(|r| r.resource == resource),
            "no {resource} request audited: {requests:#?}"
        );
    }
    env.assert_no_secret_exposed().await;
}
