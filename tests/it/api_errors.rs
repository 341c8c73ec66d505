//! Kubernetes API failures read as one sentence with a hint, exit 1, and
//! `-v` adds the raw API status. One TLS sandbox serves every case: each is
//! a wrong flag, a kubeconfig edited the way users get them wrong, or a
//! sandbox fault.

use crate::harness::{plugin_binary, Env};
use sandbox::{ClusterOptions, SecretFault};
use std::path::Path;

struct Case<'a> {
    name: &'a str,
    args: Vec<&'a str>,
    /// What the sentence and its hint must name.
    needles: Vec<&'a str>,
}

fn run(kubeconfig: &Path, namespace: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(plugin_binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", namespace, "--no-progress"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBECTL_VAULT_LOG")
        .output()
        .expect("run plugin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cluster's kubeconfig with `edit` applied, written next to it.
fn kubeconfig_with(env: &Env, name: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let text = std::fs::read_to_string(env.cluster.kubeconfig_path()).expect("kubeconfig");
    let path = env.cluster.dir().join(format!("kubeconfig-{name}"));
    std::fs::write(&path, edit(&text)).expect("write kubeconfig");
    path
}

fn replace_line(text: &str, key: &str, with: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(key) {
                with.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test]
async fn api_failures_are_one_sentence_with_a_hint_and_exit_1() {
    let env = Env::start(ClusterOptions::openbao().replicas(1).tls(true)).await;
    let good = env.cluster.kubeconfig_path().to_owned();
    let ns = env.cluster.namespace().to_owned();
    let wrong_token = kubeconfig_with(&env, "401", |t| {
        replace_line(t, "token:", "    token: not-the-token")
    });
    let refused = kubeconfig_with(&env, "refused", |t| {
        replace_line(t, "server:", "    server: https://127.0.0.1:1")
    });
    let dns = kubeconfig_with(&env, "dns", |t| {
        replace_line(
            t,
            "server:",
            "    server: https://no-such-host.invalid:6443",
        )
    });
    let untrusted = kubeconfig_with(&env, "tls", |t| {
        t.lines()
            .filter(|l| !l.contains("certificate-authority-data"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let server = env.cluster.server_url().trim_end_matches('/').to_owned();
    let cases = [
        Case {
            name: "no pods match",
            args: vec!["-l", "app=nothing", "status"],
            needles: vec!["no pods match app=nothing in namespace vault", "-l"],
        },
        Case {
            name: "context not found",
            args: vec!["--context", "nope", "status"],
            needles: vec!["context nope is not in", "--context", "sandbox"],
        },
    ];
    let with_config = [
        (
            "401",
            &wrong_token,
            vec![
                "rejected the credentials of sandbox-admin",
                "401",
                "context sandbox",
            ],
        ),
        (
            "connection refused",
            &refused,
            vec!["https://127.0.0.1:1 refused the connection", "--context"],
        ),
        (
            "dns",
            &dns,
            vec!["no-such-host.invalid", "does not resolve"],
        ),
        (
            "tls",
            &untrusted,
            vec![
                server.as_str(),
                "not trusted",
                "TLS",
                "certificate-authority-data",
            ],
        ),
    ];
    let mut runs = vec![(
        "namespace not found",
        run(&good, "nope", &["status"]),
        vec!["namespace nope does not exist", "-n", ns.as_str()],
    )];
    for case in &cases {
        runs.push((case.name, run(&good, &ns, &case.args), case.needles.clone()));
    }
    for (name, config, needles) in &with_config {
        runs.push((name, run(config, &ns, &["status"]), needles.clone()));
    }
    env.cluster.forbid("list", "pods");
    runs.push((
        "403",
        run(&good, &ns, &["status"]),
        vec![
            "list pods in namespace vault is forbidden for sandbox-admin",
            "403",
            "Role",
        ],
    ));
    env.cluster.allow_all();
    for (name, (code, stderr), needles) in &runs {
        assert_eq!(*code, 1, "{name}: exit 1\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: one line\n{stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{name}: names {needle:?}\n{stderr}"
            );
        }
        for dump in ["{", "Status", "ApiError", "ServiceError", "client error"] {
            assert!(!stderr.contains(dump), "{name}: no {dump:?}\n{stderr}");
        }
    }

    // -v adds the raw status under the same sentence.
    let (code, stderr) = run(&wrong_token, &ns, &["-v", "status"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("rejected the credentials"), "{stderr}");
    assert!(
        stderr.contains("\"code\":401"),
        "raw status at -v:\n{stderr}"
    );
    // A Secret write that keeps failing names the server's message and code
    // in each retry line and in the error, never the client's Status dump.
    let checkpoint = format!("{}-checkpoint", env.secret_name());
    env.cluster
        .fail_secret_writes(&checkpoint, 30, SecretFault::ServerError);
    let (code, stderr) = run(&good, &ns, &["init", "--yes"]);
    env.cluster
        .fail_secret_writes(&checkpoint, 0, SecretFault::ServerError);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("(500 InternalError)"), "{stderr}");
    for dump in ["{", "Status", "ApiError"] {
        assert!(!stderr.contains(dump), "no {dump:?}:\n{stderr}");
    }
}
