//! The `kube-sandbox` binary: `up` in the foreground, control subcommands, `down`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};

use crate::harness::*;

fn sandbox(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
        .args(args)
        .output()
        .expect("run kube-sandbox")
}

fn bao_servers_under(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| {
            let c = String::from_utf8_lossy(c);
            c.contains("server") && c.contains(&needle)
        })
        .count()
}

/// Kills `kube-sandbox up` if the test fails before `down`.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn up_control_and_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sb");
    let dir_s = dir.to_str().unwrap().to_string();
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
        .args([
            "up",
            "--dir",
            &dir_s,
            "--replicas",
            "1",
            "--flavour",
            "vault",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap());
    let mut first = String::new();
    BufReader::new(up.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(
        first.trim(),
        format!("export KUBECONFIG={dir_s}/kubeconfig")
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sandbox.json")).unwrap()).unwrap();
    assert_eq!(state["pid"], up.0.id());

    let kc = kube::config::Kubeconfig::read_from(dir.join("kubeconfig")).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "vault");
    assert_eq!(restart_count(&pods.get("vault-0").await.unwrap()), 0);

    let out = sandbox(&["restart-pod", "vault-0", "--dir", &dir_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(restart_count(&pods.get("vault-0").await.unwrap()), 1);

    let out = sandbox(&[
        "fail-secret-writes",
        "s",
        "--count",
        "1",
        "--mode",
        "409",
        "--dir",
        &dir_s,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secrets: Api<Secret> = Api::namespaced(client, "vault");
    let s: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "s"}})).unwrap();
    assert!(
        matches!(secrets.create(&PostParams::default(), &s).await, Err(kube::Error::Api(ref e)) if e.code == 409)
    );
    secrets.create(&PostParams::default(), &s).await.unwrap();

    let out = sandbox(&["forbid", "list", "pods", "--dir", &dir_s]);
    assert!(out.status.success());
    assert!(
        matches!(pods.list(&Default::default()).await, Err(kube::Error::Api(ref e)) if e.code == 403)
    );
    assert!(sandbox(&["allow-all", "--dir", &dir_s]).status.success());
    pods.list(&Default::default()).await.unwrap();
    assert!(
        !sandbox(&["wipe-pod", "vault-7", "--dir", &dir_s])
            .status
            .success(),
        "unknown pods are an error"
    );

    assert_eq!(bao_servers_under(&dir), 1);
    let out = sandbox(&["down", "--dir", &dir_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = up.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "up did not exit after down"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert_eq!(bao_servers_under(&dir), 0, "down kills every bao");
    assert!(dir.join("pods/vault-0/data").is_dir(), "the folder is kept");
}

/// `up --storage file`, then `reconfigure` as `helm upgrade` with the raft
/// values, then with a new image: pods are recreated on the new spec, the
/// StatefulSet follows, and the PVC folder is kept.
#[tokio::test]
async fn reconfigure_moves_a_file_storage_pod_to_raft_replicas_keeping_its_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sb");
    let dir_s = dir.to_str().unwrap().to_string();
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
        .args([
            "up",
            "--dir",
            &dir_s,
            "--storage",
            "file",
            "--pod-management",
            "Parallel",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap());
    let mut first = String::new();
    BufReader::new(up.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let kc = kube::config::Kubeconfig::read_from(dir.join("kubeconfig")).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "vault");
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client, "vault");
    let image = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    let before = pods.get("openbao-0").await.unwrap();
    assert_eq!(image(&before), "openbao/openbao:2.6.2");
    assert_eq!(pods.list(&Default::default()).await.unwrap().items.len(), 1);
    let status = seal_status(&pods, "openbao-0").await.unwrap();
    assert_eq!(status["storage_type"], "file", "{status}");
    let (key, _root) = init(&pods, "openbao-0").await.unwrap();
    unseal(&pods, "openbao-0", &key).await.unwrap();
    let file_data = dir.join("pods/openbao-0/data/core");
    assert!(file_data.is_dir(), "file storage writes under the PVC");

    let out = sandbox(&[
        "reconfigure",
        "--dir",
        &dir_s,
        "--storage",
        "raft",
        "--replicas",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(30), "3 pods", || async {
        pods.list(&Default::default()).await.unwrap().items.len() == 3
    })
    .await
    .unwrap();
    let after = pods.get("openbao-0").await.unwrap();
    assert_ne!(
        after.metadata.uid, before.metadata.uid,
        "the pod is recreated"
    );
    assert_eq!(image(&after), "openbao/openbao:2.6.2", "the image is kept");
    assert_eq!(sts.get("openbao").await.unwrap().spec.replicas, Some(3));
    let status = seal_status(&pods, "openbao-0").await.unwrap();
    assert_eq!(status["storage_type"], "raft", "{status}");
    assert_eq!(
        status["initialized"], false,
        "raft starts empty beside the file data: {status}"
    );
    assert!(file_data.is_dir(), "the PVC folder is kept");
    let config = std::fs::read_to_string(dir.join("pods/openbao-2/config.hcl")).unwrap();
    assert!(
        config.contains("storage \"raft\"") && !config.contains("retry_join"),
        "{config}"
    );

    let out = sandbox(&[
        "reconfigure",
        "--dir",
        &dir_s,
        "--version",
        "2.7.2",
        "--retry-join",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = seal_status(&pods, "openbao-1").await.unwrap();
    assert_eq!(status["version"], "2.7.2", "{status}");
    assert_eq!(
        image(&pods.get("openbao-1").await.unwrap()),
        "openbao/openbao:2.7.2"
    );
    let config = std::fs::read_to_string(dir.join("pods/openbao-2/config.hcl")).unwrap();
    assert!(config.contains("retry_join"), "{config}");
    assert!(sandbox(&["down", "--dir", &dir_s]).status.success());
    let _ = up.0.wait();
}

/// Two `up --context NAME` side by side: their kubeconfigs merge in one
/// KUBECONFIG, and the real kubectl reaches each sandbox by its context.
#[tokio::test]
async fn up_with_named_contexts_merges_in_one_kubeconfig() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ups = Vec::new();
    let mut files = Vec::new();
    for (context, name) in [("east", "east-vault"), ("west", "west-vault")] {
        let dir = tmp.path().join(context);
        let dir_s = dir.to_str().unwrap().to_string();
        let mut up = Up(Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
            .args([
                "up",
                "--dir",
                &dir_s,
                "--replicas",
                "1",
                "--name",
                name,
                "--context",
                context,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap());
        let mut first = String::new();
        BufReader::new(up.0.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        files.push(dir.join("kubeconfig"));
        ups.push((up, dir_s));
    }
    let merged = std::env::join_paths(&files).unwrap();
    let kubectl = concat!(env!("CARGO_MANIFEST_DIR"), "/../.deps/bin/kubectl");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str]| {
        Command::new(kubectl)
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .env("KUBECONFIG", &merged)
            .output()
            .expect("run kubectl")
    };
    let out = run(&["config", "get-contexts", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "east\nwest\n");
    for (context, pod) in [("east", "east-vault-0"), ("west", "west-vault-0")] {
        let out = run(&["--context", context, "get", "pods", "-o", "name"]);
        assert!(out.status.success(), "{context}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), format!("pod/{pod}"), "{context}");
    }
    for (up, dir_s) in &mut ups {
        assert!(sandbox(&["down", "--dir", dir_s]).status.success());
        let _ = up.0.wait();
    }
}
