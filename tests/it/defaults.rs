//! Default installs of the real charts (issue 17): raft node ids that the
//! server generates (`setNodeId: false`), and standalone servers on file
//! storage (`server.standalone`, one replica, not HA).

use crate::harness::Env;
use sandbox::ClusterOptions;

/// The node id OpenBao generated for pod `name` (kept in its data folder).
fn generated_node_id(env: &Env, name: &str) -> String {
    let path = env
        .cluster
        .dir()
        .join("pods")
        .join(name)
        .join("data/node-id");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn generated_node_ids_do_not_end_init_in_peers_incomplete() {
    // As the charts render it: generated ids, and raft addresses that are
    // the pods' `<pod>.<sts>-internal` names.
    let env = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(3)
            .set_node_id(false)
            .cluster_dns(true),
    )
    .await;
    // Before the fix, init waited for peers named after the pods and ended
    // in PeersIncomplete once this timeout passed, on a healthy cluster.
    let run = env.plugin(&["init", "--yes", "--timeout", "40s"]).await;
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    env.assert_whole(3).await;

    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(status["mode"], "raft", "{status}");
    let peers = status["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 3, "{status}");
    for name in env.cluster.pod_names() {
        let id = generated_node_id(&env, &name);
        assert_ne!(id, name);
        let peer = peers
            .iter()
            .find(|p| p["node_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no peer with {name}'s node id {id}: {status}"));
        assert_eq!(peer["pod"], name.as_str(), "{status}");
        assert_eq!(
            peer["address"],
            format!("{name}.openbao-internal:8201").as_str(),
            "{status}"
        );
    }
    assert!(
        status["pods"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["voter"].is_boolean()),
        "every pod is matched to its peer: {status}"
    );
    let text = env.plugin(&["status"]).await.ok().stdout;
    for name in env.cluster.pod_names() {
        assert!(text.contains(&name), "{text}");
    }

    // A restarted pod keeps its generated id; `join` checks the peer set again.
    let id = generated_node_id(&env, "openbao-1");
    env.cluster.restart_pod(1).await.unwrap();
    assert_eq!(env.seal_status(1).await["sealed"], true);
    env.plugin(&["join", "--timeout", "40s"]).await.ok();
    assert_eq!(generated_node_id(&env, "openbao-1"), id);
    env.assert_whole(3).await;
    env.assert_no_secret_exposed().await;
}

async fn standalone_lifecycle(opts: ClusterOptions) {
    let env = Env::start(opts.standalone()).await;
    assert_eq!(env.cluster.pod_names().len(), 1);
    let fresh = env.plugin(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(fresh["mode"], "standalone", "{fresh}");
    assert_eq!(fresh["storage"], "file", "{fresh}");
    assert_eq!(env.seal_status(0).await["version"], "2.6.2");

    let init = env
        .plugin(&["init", "--yes", "--timeout", "30s", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(init["result"], "initialized", "{init}");
    assert_eq!(init["report"]["standalone"], true, "{init}");
    assert!(
        !env.checkpoint_exists().await,
        "checkpoint deleted after init"
    );
    let creds = env.stored_credentials().await.expect("credentials stored");
    let token = creds["root_token"].as_str().unwrap().to_owned();
    let s = env.seal_status(0).await;
    assert_eq!(
        (s["initialized"].clone(), s["sealed"].clone()),
        (true.into(), false.into()),
        "{s}"
    );
    env.write_kv(&token, "probe", "standalone").await;

    let text = env.plugin(&["status"]).await.ok().stdout;
    assert!(text.contains("standalone (file storage, not HA)"), "{text}");
    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(status["pods"][0]["raft_role"], "standalone", "{status}");
    assert!(status["peers"].is_null(), "{status}");

    // A restart seals it; `unseal` brings it back without looking for a leader.
    env.cluster.restart_pod(0).await.unwrap();
    assert_eq!(env.seal_status(0).await["sealed"], true);
    env.plugin(&["unseal", "--timeout", "30s"]).await.ok();
    assert_eq!(env.seal_status(0).await["sealed"], false);
    assert_eq!(env.read_kv(&token, "probe").await, "standalone");

    // Rekey and a new root token; the new shares unseal after a restart.
    env.plugin(&["rotate", "--yes", "--root-token"]).await.ok();
    let rotated = env.stored_credentials().await.unwrap();
    assert_eq!(rotated["generation"], 2, "{rotated}");
    assert_ne!(rotated["root_token"], creds["root_token"]);
    env.cluster.restart_pod(0).await.unwrap();
    env.plugin(&["unseal"]).await.ok();
    let new_token = rotated["root_token"].as_str().unwrap().to_owned();
    assert_eq!(env.read_kv(&new_token, "probe").await, "standalone");

    // The credentials commands: export, lose the Secret, import it back
    // (import proves the root token on the server).
    let file = env.cluster.dir().join("standalone-credentials.yaml");
    env.plugin(&[
        "credentials",
        "export",
        "--plaintext",
        "-f",
        file.to_str().unwrap(),
    ])
    .await
    .ok();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client().await, env.cluster.namespace());
    secrets
        .delete(&env.secret_name(), &Default::default())
        .await
        .unwrap();
    let imported = env
        .plugin(&[
            "credentials",
            "import",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(imported["result"], "imported", "{imported}");
    assert_eq!(env.stored_credentials().await.unwrap(), rotated);
    std::fs::remove_file(&file).unwrap();

    // A second init finds it initialized and changes nothing.
    let again = env
        .plugin(&["init", "--yes", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(again["result"], "already_initialized", "{again}");

    // No raft snapshots on file storage: refused, with the way forward.
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{}/", dir.path().display());
    for args in [
        vec!["snapshot", "save", "--to", to.as_str()],
        vec!["snapshot", "restore", "--yes", "--from", to.as_str()],
        vec!["recover", "--yes", "--from", to.as_str()],
    ] {
        let run = env.plugin(&args).await;
        assert_eq!(run.code, 1, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("file storage") && run.stderr.contains("kubectl vault migrate"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(env.stored_credentials().await.unwrap()["generation"], 2);
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn standalone_openbao_init_restart_unseal_rotate_status() {
    standalone_lifecycle(ClusterOptions::openbao()).await;
}

#[tokio::test]
async fn standalone_vault_init_restart_unseal_rotate_status() {
    standalone_lifecycle(ClusterOptions::vault()).await;
}

#[tokio::test]
async fn generated_node_ids_rotate_snapshot_save_and_recover() {
    generated_node_ids_lifecycle(ClusterOptions::openbao().parallel()).await;
}

/// The hashicorp/vault chart's HA raft default: generated node ids too.
#[tokio::test]
async fn generated_node_ids_on_the_vault_chart_rotate_snapshot_save_and_recover() {
    generated_node_ids_lifecycle(ClusterOptions::vault()).await;
}

/// init, a full restart and unseal, rotate, snapshot save, then recover
/// after every pod lost its data, on HA raft with generated node ids and
/// the charts' `<pod>.<sts>-internal` raft addresses.
async fn generated_node_ids_lifecycle(opts: ClusterOptions) {
    let opts = opts.replicas(3).set_node_id(false).cluster_dns(true);
    let pod1 = opts.pod_name(1);
    let env = Env::start(opts).await;
    env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
        .await
        .ok();
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    env.plugin(&["rotate", "--yes"]).await.ok();
    let creds = env.stored_credentials().await.unwrap();
    assert_eq!(creds["generation"], 2, "{creds}");
    let token = creds["root_token"].as_str().unwrap().to_owned();
    env.write_kv(&token, "probe", "before-loss").await;

    let dir = tempfile::tempdir().unwrap();
    let to = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to]).await.ok();

    // Every pod loses its data, node-id file included: the new servers
    // generate new ids, and the snapshot names the old ones.
    let old_id = generated_node_id(&env, &pod1);
    for i in 0..3 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    env.plugin(&["recover", "--from", &to, "--yes", "--timeout", "60s"])
        .await
        .ok();
    assert_ne!(generated_node_id(&env, &pod1), old_id);
    env.assert_whole(3).await;
    assert_eq!(env.read_kv(&token, "probe").await, "before-loss");
    env.assert_no_secret_exposed().await;
}

/// The charts' containers run as uid 100 (fsGroup 1000) with `/` as the
/// working directory, which that user cannot write; HOME, `/tmp` and the
/// data volume it can. The sandbox ran exec'd commands as root in a
/// writable pod folder, so a command that wrote into its working directory
/// passed here and failed on every real install.
#[tokio::test]
async fn exec_runs_as_the_charts_user_in_a_working_directory_it_cannot_write() {
    if !sandbox::running_as_root() {
        eprintln!("skipped: the sandbox needs root to run commands as uid 100");
        return;
    }
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    let exec = |script: &str| {
        let out = std::process::Command::new(crate::harness::deps_bin().join("kubectl"))
            .arg("--kubeconfig")
            .arg(env.cluster.kubeconfig_path())
            .args(["-n", env.cluster.namespace(), "exec", "openbao-0", "--"])
            .args(["/bin/sh", "-c", script])
            .output()
            .expect("run kubectl");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = exec("id -u; id -g; id -G");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["100", "1000", "1000"]
    );
    // As runc does, the exec's stdio pipes are handed to that user, so the
    // CLI can write a snapshot to /dev/stdout.
    let (code, out) = exec("echo through > /dev/stdout");
    assert_eq!((code, out.trim()), (Some(0), "through"));
    let (code, out) = exec("touch ./probe");
    assert_ne!(
        code,
        Some(0),
        "the working directory is not writable: {out}"
    );
    assert!(out.contains("Permission denied"), "{out}");
    let data = env.cluster.dir().join("pods/openbao-0/data");
    let (code, out) = exec(&format!(
        "touch \"$HOME/h\" \"${{TMPDIR:-/tmp}}/t\" '{}/d' && echo ok",
        data.display()
    ));
    assert_eq!(
        (code, out.trim()),
        (Some(0), "ok"),
        "HOME, /tmp and the data volume are"
    );
}
