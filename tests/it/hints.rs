//! Hints that lead somewhere: from each state a user meets, follow the
//! "run X" the tool prints (and, after a run that names nothing, what
//! `status` calls next) until the cluster is whole, or a person has to
//! decide (which snapshot: `LOCATION`). No hint may lead back into itself.
//!
//! One 3-pod cluster walks the states in turn: uninitialized (with init
//! killed once, leaving an init checkpoint), sealed, a rotate checkpoint,
//! wiped with the keys surviving, a restore checkpoint, and a recover
//! checkpoint.

use crate::harness::Env;
use sandbox::ClusterOptions;

/// The first `kubectl vault ...` command named in `text`, as arguments.
fn named_command(text: &str) -> Option<Vec<String>> {
    let start = text.find("`kubectl vault ")? + "`kubectl vault ".len();
    let rest = &text[start..];
    let end = rest.find('`')?;
    Some(rest[..end].split_whitespace().map(str::to_owned).collect())
}

/// Follows the hints from `start`. `crash` kills the first run of a command
/// at a failpoint, as a lost terminal or a killed Job would. `location` is
/// what the person answers where the tool asks for one.
async fn walk(
    env: &Env,
    start: &[&str],
    crash: Option<(&str, &str)>,
    location: &str,
) -> Vec<String> {
    let mut crash = crash;
    let mut args: Vec<String> = start.iter().map(|s| s.to_string()).collect();
    let mut seen: Vec<(Vec<String>, Vec<String>)> = vec![];
    let mut path = vec![];
    for _ in 0..8 {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let run = match crash {
            Some((command, failpoint)) if args[0] == command => {
                crash = None;
                env.plugin_crashing_at(&argv, failpoint).await
            }
            _ => env.plugin(&argv).await,
        };
        path.push(format!(
            "{} (exit {}, {:.1}s)",
            args.join(" "),
            run.code,
            started.elapsed().as_secs_f64()
        ));
        let error_line = run
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains("ERROR") && l.contains("`kubectl vault "));
        let hint = match error_line.filter(|_| run.code != 0).and_then(named_command) {
            Some(hint) => hint,
            None => {
                let status = env.plugin(&["status"]).await.ok();
                let next = status.stdout.lines().find(|l| l.starts_with("Next:"));
                match next {
                    None => {
                        eprintln!("{path:#?}");
                        return path;
                    }
                    Some(line) => {
                        path.push(format!("status: {line}"));
                        named_command(line).expect("the next step names a command")
                    }
                }
            }
        };
        assert!(
            !seen.contains(&(args.clone(), hint.clone())),
            "the hints go in a circle: {path:#?}"
        );
        seen.push((args.clone(), hint.clone()));
        args = hint
            .into_iter()
            .map(|a| {
                if a == "LOCATION" {
                    location.to_owned()
                } else {
                    a
                }
            })
            .collect();
        args.push("--yes".into());
    }
    panic!("no end after 8 steps: {path:#?}");
}

fn commands(path: &[String]) -> Vec<String> {
    path.iter()
        .filter(|s| !s.starts_with("status:"))
        .map(|s| s.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn following_the_hints_from_each_state_ends_whole_without_a_cycle() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let snapshots = env.cluster.dir().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let location = snapshots.to_str().unwrap();

    // Uninitialized: rotate points to init; init is killed after its
    // checkpoint; status points to resuming it.
    let path = walk(
        &env,
        &["rotate", "--yes"],
        Some(("init", "init::after_checkpoint")),
        location,
    )
    .await;
    assert_eq!(commands(&path), ["rotate", "init", "init"], "{path:#?}");
    env.assert_whole(3).await;

    // Sealed: rotate points to unseal.
    env.cluster.restart_all().await.unwrap();
    let path = walk(&env, &["rotate", "--yes"], None, location).await;
    assert_eq!(commands(&path), ["rotate", "unseal"], "{path:#?}");
    env.assert_whole(3).await;

    // A rotate killed after its checkpoint: unseal still works, and status
    // points to finishing the rotate.
    let path = walk(
        &env,
        &["rotate", "--yes"],
        Some(("rotate", "rotate::after_checkpoint")),
        location,
    )
    .await;
    assert_eq!(commands(&path), ["rotate", "rotate"], "{path:#?}");
    assert!(
        !env.checkpoint_exists().await,
        "the rotate finished: {path:#?}"
    );
    env.assert_whole(3).await;

    // Wiped with the keys surviving: every command points to recover, which
    // asks the person for the snapshot.
    env.plugin(&["snapshot", "save", "--to", location])
        .await
        .ok();
    for i in 0..3 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    for start in [&["unseal"][..], &["join"], &["init", "--yes"]] {
        let run = env.plugin(start).await;
        assert_eq!(run.code, 1, "{start:?} refuses: {run:?}");
        assert_eq!(
            run.stderr.lines().rev().find_map(named_command),
            Some(vec!["recover".into(), "--from".into(), "LOCATION".into()]),
            "{start:?}: {}",
            run.stderr
        );
    }
    let path = walk(&env, &["unseal"], None, location).await;
    assert_eq!(commands(&path), ["unseal", "recover"], "{path:#?}");
    env.assert_whole(3).await;

    // A restore killed once its snapshot is applied: rotate refuses and
    // names the resume command, snapshot included, which runs as printed.
    let crashed = env
        .plugin_crashing_at(
            &["snapshot", "restore", "--from", location, "--yes"],
            "restore::after_applied_checkpoint",
        )
        .await;
    assert_eq!(crashed.code, 101, "the failpoint fired: {crashed:?}");
    assert!(env.checkpoint_exists().await);
    let path = walk(&env, &["rotate", "--yes"], None, location).await;
    assert_eq!(commands(&path), ["rotate", "snapshot"], "{path:#?}");
    assert!(!env.checkpoint_exists().await, "{path:#?}");
    env.assert_whole(3).await;

    // A recover killed after its restore, on a wiped cluster: unseal points
    // to finishing it, with the snapshot it was restoring.
    for i in 0..3 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    let crashed = env
        .plugin_crashing_at(
            &["recover", "--from", location, "--yes"],
            "recover::after_restore",
        )
        .await;
    assert_eq!(crashed.code, 101, "the failpoint fired: {crashed:?}");
    assert!(env.checkpoint_exists().await);
    let path = walk(&env, &["unseal"], None, location).await;
    assert_eq!(commands(&path).last().unwrap(), "recover", "{path:#?}");
    assert!(
        path.iter().all(|s| !s.contains("LOCATION")),
        "the resume names the snapshot: {path:#?}"
    );
    assert!(!env.checkpoint_exists().await, "{path:#?}");
    env.assert_whole(3).await;
    env.assert_no_secret_exposed().await;
}
