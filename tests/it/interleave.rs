//! The interleaving matrix: operation A is killed where its new key material
//! exists only in its checkpoint; then every other command B runs. B either
//! finishes A's work (A's own resume) or refuses naming A's resume command,
//! and never loses what A holds: after a full restart every pod unseals with
//! what is stored, data written before A reads back, and nothing initialized
//! twice. One cluster per A; the Bs run on it one after the other.

use crate::harness::{Env, Run};
use sandbox::ClusterOptions;

/// An interrupted operation and where it is killed. `{dir}` in `args` is
/// the folder a snapshot was saved to before A.
struct Interrupted {
    name: &'static str,
    args: &'static [&'static str],
    failpoint: &'static str,
    resume: &'static str,
    resume_args: &'static [&'static str],
    /// Wipe every pod before A (recover's precondition). The data is gone
    /// until A finishes, so no B can be expected to unseal in between.
    wipe: bool,
}

const INIT: Interrupted = Interrupted {
    name: "init",
    args: &["init", "--yes", "--key-shares", "3", "--key-threshold", "2"],
    failpoint: "init::after_checkpoint",
    resume: "kubectl vault init",
    resume_args: &["init", "--yes"],
    wipe: false,
};

const REKEY: Interrupted = Interrupted {
    name: "rotate",
    args: &["rotate", "--yes"],
    failpoint: "rotate::after_verify",
    resume: "kubectl vault rotate",
    resume_args: &["rotate", "--yes"],
    wipe: false,
};

const ROOT_TOKEN: Interrupted = Interrupted {
    name: "rotate --root-token",
    args: &["rotate", "--yes", "--only-root-token"],
    failpoint: "root::after_checkpoint",
    resume: "kubectl vault rotate",
    resume_args: &["rotate", "--yes"],
    wipe: false,
};

/// Killed after the snapshot was applied: the pods are resealed and need the
/// snapshot's key generation, which only the checkpoint names.
const RESTORE: Interrupted = Interrupted {
    name: "snapshot restore",
    args: &["snapshot", "restore", "--from", "{dir}/", "--yes"],
    failpoint: "restore::after_apply",
    resume: "kubectl vault snapshot restore",
    resume_args: &["snapshot", "restore", "--from", "{dir}/", "--yes"],
    wipe: false,
};

/// Killed while pod 0 carries recover's temporary init, whose keys exist
/// only in the checkpoint.
const RECOVER: Interrupted = Interrupted {
    name: "recover",
    args: &["recover", "--from", "{dir}/", "--yes"],
    failpoint: "recover::after_temp_checkpoint",
    resume: "kubectl vault recover",
    resume_args: &["recover", "--from", "{dir}/", "--yes"],
    wipe: true,
};

/// The other commands, in an order where none of them is A's own resume.
fn others(dir: &str, export: &str) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    vec![
        s(&["unseal"]),
        s(&["join", "--timeout", "120s"]),
        s(&["snapshot", "save", "--to", &format!("{dir}/")]),
        s(&["credentials", "import", "--force", "-f", export]),
        s(&["hook", "--timeout=180s"]),
        s(&["init", "--yes"]),
        s(&["rotate", "--yes"]),
    ]
}

fn is_resume_of(a: &Interrupted, b: &[String]) -> bool {
    match a.name {
        "init" => b[0] == "init" || b[0] == "hook",
        "rotate" | "rotate --root-token" => b[0] == "rotate",
        _ => false,
    }
}

fn with_dir(args: &[&str], dir: &str) -> Vec<String> {
    args.iter().map(|a| a.replace("{dir}", dir)).collect()
}

async fn all_unsealed(env: &Env) -> bool {
    for i in 0..env.cluster.pod_names().len() as u32 {
        if env.seal_status(i).await["sealed"] != false {
            return false;
        }
    }
    true
}

async fn interleave(a: Interrupted) {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().display().to_string();
    let export = work.path().join("export.yaml");
    let token_before = if a.name == "init" {
        None
    } else {
        env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
            .await
            .ok();
        env.plugin(&[
            "credentials",
            "export",
            "--plaintext",
            "-f",
            export.to_str().unwrap(),
        ])
        .await
        .ok();
        let token = env.stored_credentials().await.unwrap()["root_token"]
            .as_str()
            .unwrap()
            .to_owned();
        env.write_kv(&token, "before", a.name).await;
        Some(token)
    };
    let snapshots = work.path().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let snapshots = snapshots.display().to_string();
    if a.wipe || a.name == "snapshot restore" {
        env.plugin(&["snapshot", "save", "--to", &format!("{snapshots}/")])
            .await
            .ok();
    }
    if let Some(token) = &token_before {
        // Written after the snapshot: a restore brings back the state before it.
        env.write_kv(token, "after-snapshot", "x").await;
    }
    if a.wipe {
        for i in 0..3 {
            env.cluster.wipe_pod(i).await.unwrap();
        }
    }
    let a_args = with_dir(a.args, &snapshots);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let crashed = env.plugin_crashing_at(&a_args, a.failpoint).await;
    assert_ne!(crashed.code, 0, "{crashed:?}");
    assert!(
        crashed.stderr.contains(a.failpoint),
        "the failpoint fired: {crashed:?}"
    );
    assert!(env.checkpoint_exists().await, "A left its checkpoint");

    let mut finished_by = None;
    for b in others(&dir, export.to_str().unwrap()) {
        if a.name == "init" && b[0] == "credentials" {
            continue; // nothing was ever stored to export
        }
        let args: Vec<&str> = b.iter().map(String::as_str).collect();
        let run: Run = env.plugin(&args).await;
        let resumes = is_resume_of(&a, &b);
        eprintln!("{} then `{}`: exit {}", a.name, b.join(" "), run.code);
        if resumes {
            assert_eq!(
                run.code,
                0,
                "`{}` finishes {}: {run:?}",
                b.join(" "),
                a.name
            );
            assert!(!env.checkpoint_exists().await, "{run:?}");
            finished_by = Some(b.join(" "));
            break;
        }
        assert!(
            run.code == 0 || (run.code == 1 && run.stderr.contains(a.resume)),
            "`{}` after an interrupted {} either works around it or refuses naming `{}`: {run:?}",
            b.join(" "),
            a.name,
            a.resume
        );
        assert!(
            env.checkpoint_exists().await,
            "`{}` kept {}'s checkpoint",
            b.join(" "),
            a.name
        );
        if a.wipe {
            continue;
        }
        // What is stored (with the checkpoint) still unseals every pod.
        env.cluster.restart_all().await.unwrap();
        env.plugin(&["unseal", "--timeout", "0s"]).await;
        let join = env.plugin(&["join", "--timeout", "120s"]).await;
        assert!(
            all_unsealed(&env).await,
            "after `{}` and a full restart the stored keys unseal every pod: {join:?}",
            b.join(" ")
        );
    }
    if finished_by.is_none() {
        let resume = with_dir(a.resume_args, &snapshots);
        let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
        env.plugin(&resume).await.ok();
    }
    assert!(!env.checkpoint_exists().await);
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
    let stored = env.stored_credentials().await.unwrap();
    let token = stored["root_token"].as_str().unwrap();
    if let Some(before) = token_before {
        assert_eq!(env.read_kv(token, "before").await, a.name);
        if a.name == "rotate --root-token" {
            assert_ne!(token, before, "the new root token is the stored one");
        }
    }
    // recover's temporary init of pod 0 is a sys/init of its own, once.
    let expected = 1 + usize::from(a.wipe);
    assert_eq!(env.sys_inits(), expected, "nothing initialized twice");
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn interleave_restore_killed_after_the_snapshot_was_applied() {
    interleave(RESTORE).await;
}

#[tokio::test]
async fn interleave_recover_killed_with_the_temporary_keys_only_in_the_checkpoint() {
    interleave(RECOVER).await;
}

#[tokio::test]
async fn interleave_init_killed_with_keys_only_in_the_checkpoint() {
    interleave(INIT).await;
}

#[tokio::test]
async fn interleave_rotate_killed_after_verification() {
    interleave(REKEY).await;
}

#[tokio::test]
async fn interleave_root_token_rotation_killed_before_revoking_the_old_token() {
    interleave(ROOT_TOKEN).await;
}
