//! What a person sees in a real terminal: the plugin runs on a
//! pseudo-terminal of 120x40 (progress bars on, as for a user), the bytes
//! it wrote are replayed through a terminal emulator, and the final screen
//! is checked: every row of the result is there, no spinner is left, no
//! Debug structure. Without a terminal the same commands write no escape
//! sequence at all. `status --watch` redraws one table in place while a pod
//! restarts sealed and is unsealed, and Ctrl-C leaves it whole. One 3-pod
//! cluster serves every command in turn.

use crate::harness::{plugin_binary, Env};
use sandbox::ClusterOptions;
use std::io::Read;
use std::time::Duration;

const ROWS: u16 = 40;
const COLS: u16 = 120;

/// The final screen of one run on a pseudo-terminal, and its exit code.
struct Screen {
    code: i32,
    text: String,
}

/// A run on a pseudo-terminal, with what it wrote so far.
struct Live {
    child: std::process::Child,
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Live {
    fn start(env: &Env, args: &[&str]) -> Live {
        let (mut pty, pts) = pty_process::blocking::open().expect("open a pty");
        pty.resize(pty_process::Size::new(ROWS, COLS))
            .expect("resize the pty");
        let child = pty_process::blocking::Command::new(plugin_binary())
            .arg("--kubeconfig")
            .arg(env.cluster.kubeconfig_path())
            .args(["-n", env.cluster.namespace()])
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBECTL_VAULT_LOG")
            .env("TERM", "xterm-256color")
            .current_dir(env.cluster.dir())
            .spawn(pts)
            .expect("spawn the plugin on the pty");
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let sink = bytes.clone();
        // Reads until the child's side closes (EIO on Linux).
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pty.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Live {
            child,
            bytes,
            reader,
        }
    }

    /// The screen as a terminal shows it now.
    fn screen(&self) -> String {
        let mut parser = vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 0);
        parser.process(&self.bytes.lock().unwrap());
        parser.screen().contents().trim_end().to_owned()
    }

    /// Waits up to `secs` for `ready` to hold on the screen.
    fn wait_for(&self, what: &str, secs: u64, ready: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while !ready(&self.screen()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} never showed:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn finish(mut self) -> Screen {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the plugin") {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(50));
        };
        let reader = std::mem::replace(&mut self.reader, std::thread::spawn(|| ()));
        reader.join().expect("pty reader");
        Screen {
            code: status.code().unwrap_or(-1),
            text: self.screen(),
        }
    }
}

fn on_terminal(env: &Env, args: &[&str]) -> Screen {
    Live::start(env, args).finish()
}

/// The same command with stdout and stderr piped, progress not disabled.
fn without_terminal(env: &Env, args: &[&str]) -> (i32, Vec<u8>) {
    let out = std::process::Command::new(plugin_binary())
        .arg("--kubeconfig")
        .arg(env.cluster.kubeconfig_path())
        .args(["-n", env.cluster.namespace()])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBECTL_VAULT_LOG")
        .env("TERM", "xterm-256color")
        .current_dir(env.cluster.dir())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the plugin");
    let mut bytes = out.stdout;
    bytes.extend_from_slice(&out.stderr);
    (out.status.code().unwrap_or(-1), bytes)
}

/// Replaces what changes from run to run: addresses, hashes, times, sizes,
/// rates, the sandbox's folder, and which pod won the election.
fn redact(text: &str, dir: &str) -> String {
    let rules = [
        (r"https?://127\.\d+\.\d+\.\d+:\d+", "[ADDR]"),
        (r"[0-9a-f]{64}", "[SHA256]"),
        (r"\d{8}T\d{6}Z", "[TIME]"),
        (r"\d+(\.\d+)? (B|KiB|MiB|GiB)/s", "[RATE]"),
        (r"\d+(\.\d+)? (B|KiB|MiB|GiB)", "[SIZE]"),
        (r"in \d+\.\d+s", "in [SECS]"),
        (r"\d+ bytes", "[N] bytes"),
        (r"openbao-\d: active leader", "openbao-N: active leader"),
        (r"from openbao-\d", "from openbao-N"),
        (r"size=\d+", "size=[N]"),
        (
            r"openbao-\d(\s+)(saving|new shares|active)",
            "openbao-N$1$2",
        ),
        (r"leader openbao-\d", "leader openbao-N"),
    ];
    let mut text = text.replace(dir, "[DIR]");
    for (pattern, with) in rules {
        let re = regex_lite::Regex::new(pattern).expect("pattern");
        text = re.replace_all(&text, with).into_owned();
    }
    text
}

/// What every final screen must be.
fn assert_clean(name: &str, screen: &Screen) {
    assert_eq!(screen.code, 0, "{name}:\n{}", screen.text);
    let spinner = screen
        .text
        .chars()
        .find(|c| ('\u{2800}'..='\u{28ff}').contains(c));
    assert_eq!(spinner, None, "{name}: a spinner is left:\n{}", screen.text);
    assert!(
        !screen.text.contains('{') && !screen.text.contains('}'),
        "{name}: Debug structure on screen:\n{}",
        screen.text
    );
}

#[tokio::test]
async fn final_screens_are_whole_and_clean_and_pipes_get_no_escapes() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    let dir = env.cluster.dir().to_str().unwrap().to_owned();
    let snapshots = env.cluster.dir().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let to = snapshots.to_str().unwrap().to_owned();
    let env = std::sync::Arc::new(env);
    let on = |args: Vec<String>| {
        let env = env.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                on_terminal(&env, &args)
            })
            .await
            .expect("terminal run")
        }
    };
    let owned = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let init = on(owned(&["init", "--yes"])).await;
    assert_clean("init", &init);
    insta::assert_snapshot!("init", redact(&init.text, &dir));

    env.cluster.restart_all().await.unwrap();
    let unseal = on(owned(&["unseal"])).await;
    assert_clean("unseal", &unseal);
    let table: Vec<&str> = unseal
        .text
        .lines()
        .skip_while(|l| !l.starts_with("POD "))
        .collect();
    for pod in env.cluster.pod_names() {
        assert!(
            table
                .iter()
                .any(|l| l.starts_with(&format!("{pod} ")) && l.contains("unsealed")),
            "unseal: the row of {pod} is on screen:\n{}",
            unseal.text
        );
    }
    insta::assert_snapshot!("unseal_after_restart", redact(&unseal.text, &dir));

    let rotate = on(owned(&["rotate", "--yes"])).await;
    assert_clean("rotate", &rotate);
    insta::assert_snapshot!("rotate", redact(&rotate.text, &dir));

    let save = on(owned(&["snapshot", "save", "--to", &to])).await;
    assert_clean("snapshot save", &save);
    assert!(save.text.contains("✓ snapshot"), "{}", save.text);
    insta::assert_snapshot!("snapshot_save", redact(&save.text, &dir));

    // The restore's stream bar ends in one line with size and rate, and the
    // summary follows it.
    let saved = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .expect("the saved snapshot");
    let from = saved.to_str().unwrap();
    let restore = on(owned(&["snapshot", "restore", "--from", from, "--yes"])).await;
    assert_clean("snapshot restore", &restore);
    let bar = restore
        .text
        .lines()
        .position(|l| l.starts_with("✓ restore"));
    let summary = restore
        .text
        .lines()
        .position(|l| l.starts_with("Restored "));
    assert!(
        matches!((bar, summary), (Some(b), Some(s)) if b < s),
        "snapshot restore: the stream's line, then the summary:\n{}",
        restore.text
    );
    insta::assert_snapshot!("snapshot_restore", redact(&restore.text, &dir));

    // status --watch redraws in place as a pod restarts sealed and is
    // unsealed again, and Ctrl-C leaves one whole table.
    let watch = {
        let env = env.clone();
        tokio::task::spawn_blocking(move || {
            Live::start(&env, &["status", "--watch", "--interval", "1s"])
        })
        .await
        .unwrap()
    };
    let sealed_column = |screen: &str, pod: &str| {
        screen
            .lines()
            .find(|l| l.starts_with(&format!("{pod} ")))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
    };
    let watch = tokio::task::spawn_blocking(move || {
        watch.wait_for("the first table", 60, |s| s.contains("Leader:"));
        watch
    })
    .await
    .unwrap();
    env.cluster.restart_pod(1).await.unwrap();
    let watch = tokio::task::spawn_blocking(move || {
        watch.wait_for("openbao-1 sealed", 60, |s| {
            sealed_column(s, "openbao-1").as_deref() == Some("true")
        });
        watch
    })
    .await
    .unwrap();
    env.plugin(&["unseal"]).await.ok();
    let watched = tokio::task::spawn_blocking(move || {
        watch.wait_for("openbao-1 unsealed", 60, |s| {
            sealed_column(s, "openbao-1").as_deref() == Some("false")
        });
        let pid = watch.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        watch.finish()
    })
    .await
    .unwrap();
    assert_clean("status --watch", &watched);
    assert_eq!(
        watched
            .text
            .lines()
            .filter(|l| l.starts_with("POD "))
            .count(),
        1,
        "one table after the redraws:\n{}",
        watched.text
    );
    for pod in env.cluster.pod_names() {
        assert_eq!(
            sealed_column(&watched.text, &pod).as_deref(),
            Some("false"),
            "{pod} unsealed in the last table:\n{}",
            watched.text
        );
    }

    let env2 = env.clone();
    let from = from.to_owned();
    let piped = tokio::task::spawn_blocking(move || {
        [
            vec!["unseal"],
            vec!["status"],
            vec!["snapshot", "save", "--to", &to],
            vec!["snapshot", "restore", "--from", &from, "--yes"],
            vec!["-l", "app=nothing", "status"],
        ]
        .map(|args| (args.join(" "), without_terminal(&env2, &args)))
    })
    .await
    .unwrap();
    for (args, (code, bytes)) in piped {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            code == 0 || args.contains("nothing"),
            "{args}: exit {code}\n{text}"
        );
        assert!(
            !bytes.contains(&0x1b),
            "{args}: an escape sequence without a terminal:\n{text}"
        );
    }
}
