//! `sys/init` as a process that outlives the plugin, and the pod-local copy
//! of its answer.
//!
//! Owns where the copy lives and how the call runs. It does not decide when
//! to call `sys/init` or what to do with the answer: that is `ops::init`.
//!
//! # Expected flow
//! 1. One exec writes the request body to `<dir>/.kubectl-vault-init.json.req`
//!    and starts `bao|vault write sys/init` under `setsid`, detached from the
//!    exec stream, with its stdout redirected into `….json.part`. The exec
//!    returns at once.
//! 2. The plugin polls by exec until `….json` (renamed from `.part` after the
//!    CLI exited 0) or `….json.failed` (the CLI's stderr) exists.
//! 3. After the caller stored the answer durably, [`clear`] removes the files.
//!
//! # Guarantees
//! - The answer goes from the server's response straight into a file; no
//!   step between them can be interrupted by the plugin going away (SIGKILL,
//!   Ctrl-C, a cancelled Job), by the exec stream closing, or by the exec's
//!   process group being killed: the CLI runs in its own session.
//! - `<dir>` is the mount path of the pod's PersistentVolumeClaim (the data
//!   volume), which survives container restarts and pod deletion. Only a pod
//!   with no claim falls back to `$HOME` or `$TMPDIR`, with a warning.
//! - A second launch while one is running attaches to it instead of calling
//!   `sys/init` again.
//!
//! # Caveats
//! The server can initialize and the container die before the CLI writes the
//! response: that window is the server's reply on loopback, nothing more.

use crate::ops::node::{NodeError, VaultNode};
use crate::ops::secret::{SecretAnswer, SecretBytes};
use crate::transport::exec::{interpret_secret, parse_cli_error, ExecNode, ExecOutput};
use std::time::{Duration, Instant};

/// The copy's file name inside its folder.
pub const INIT_COPY: &str = ".kubectl-vault-init.json";

/// How long a launched `sys/init` may take before the plugin stops waiting
/// (the process goes on; a re-run finds its answer).
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// Picks the folder: the data volume given as `$1`, else HOME or TMPDIR.
const PICK_DIR: &str = r#"d="$1"; if [ -z "$d" ]; then d="$HOME"; [ -n "$d" ] && [ -w "$d" ] || d="${TMPDIR:-/tmp}"; fi"#;

/// `$1`: the folder (may be empty); `$0`: the CLI; stdin: the request body.
/// Prints nothing; exits 0 once a run is in flight or an answer exists.
fn launch_script() -> String {
    format!(
        r#"umask 077; {PICK_DIR}; f="$d/{INIT_COPY}"
[ -s "$f" ] && exit 0
if [ -e "$f.run" ]; then p=$(cat "$f.run"); p=${{p##* }}; kill -0 "$p" 2>/dev/null && exit 0; fi
rm -f "$f.failed"
echo "starting $$" > "$f.run.$$" && mv "$f.run.$$" "$f.run" || exit 71
cat > "$f.req" || exit 71
setsid sh -c 'f="$1"; echo $$ > "$f.run.$$" && mv "$f.run.$$" "$f.run"; p="$f.part.$$"; if "$0" write -format=json sys/init - < "$f.req" > "$p" 2> "$f.err.$$" && [ -s "$p" ]; then sync; mv "$p" "$f"; sync; else mv "$f.err.$$" "$f.failed"; rm -f "$p"; fi; rm -f "$f.err.$$"; [ "$(cat "$f.run" 2>/dev/null)" = "$$" ] && rm -f "$f.run" "$f.req"' "$0" "$f" < /dev/null > /dev/null 2>&1 &
i=0; while [ $i -lt 100 ]; do case "$(cat "$f.run" 2>/dev/null)" in starting*) sleep 0.05 2>/dev/null || sleep 1; i=$((i+1));; *) exit 0;; esac; done
exit 0"#
    )
}

/// Exit codes of the poll script beyond 0 (answer on stdout).
const FAILED: i32 = 74;
const RUNNING: i32 = 75;
const VANISHED: i32 = 76;
const NOTHING: i32 = 77;

/// `$@`: folders to look in, in order. Exit 0 prints an answer; 74 prints
/// the CLI's error; 75 a run is in flight; 76 a run died without an answer;
/// 77 nothing there. A launcher that died before it handed over to the
/// detached process (`starting PID`, PID gone) sent nothing: that is 77.
fn poll_script() -> String {
    format!(
        r#"state=77
for d in "$@"; do [ -n "$d" ] || continue; f="$d/{INIT_COPY}"
  [ -s "$f" ] && exec cat "$f"
  if [ -e "$f.run" ]; then r=$(cat "$f.run"); p=${{r##* }}
    if [ -z "$p" ] || kill -0 "$p" 2>/dev/null; then state=75; continue; fi
    [ -s "$f" ] && exec cat "$f"
    case "$r" in
      starting*) ;;
      *) [ -e "$f.failed" ] || {{ [ $state = 77 ] && state=76; continue; }} ;;
    esac
  fi
  if [ -e "$f.failed" ] && [ $state = 77 ]; then cat "$f.failed" >&2; state=74; fi
done
exit $state"#
    )
}

/// The folders a copy may be in: the data volume, then where releases
/// before it kept the copy.
fn search_dirs(node: &ExecNode) -> Vec<String> {
    vec![
        node.data_dir().unwrap_or_default().to_owned(),
        "$HOME".to_owned(),
        "${TMPDIR:-/tmp}".to_owned(),
    ]
}

fn poll_argv(node: &ExecNode) -> Vec<String> {
    // The folder names are not secrets; the shell expands the variables.
    let dirs = search_dirs(node)
        .into_iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        "sh".into(),
        "-c".into(),
        format!("set -- {dirs}; {}", poll_script()),
    ]
}

/// What the poll found.
enum Found {
    Answer(SecretAnswer),
    Running,
    Nothing,
}

async fn poll_once(node: &ExecNode) -> Result<Found, NodeError> {
    let out = node.run(poll_argv(node), None).await?;
    match out.exit_code {
        0 => interpret_secret(out).map(Found::Answer),
        FAILED => Err(parse_cli_error(&out.stderr, 2)),
        RUNNING => Ok(Found::Running),
        VANISHED => Err(NodeError::Unreachable(format!(
            "the sys/init process in pod {} ended without an answer (was the container restarted?)",
            node.name()
        ))),
        NOTHING => Ok(Found::Nothing),
        code => Err(parse_cli_error(&out.stderr, code)),
    }
}

/// Waits for a run in flight to leave its answer; `None` when none is there.
async fn wait_for_answer(node: &ExecNode) -> Result<Option<SecretAnswer>, NodeError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match poll_once(node).await? {
            Found::Answer(v) => return Ok(Some(v)),
            Found::Nothing => return Ok(None),
            Found::Running if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            Found::Running => {
                return Err(NodeError::Unreachable(format!(
                "sys/init in pod {} has not answered after {WAIT:?}; re-run to pick up its answer",
                node.name()
            )))
            }
        }
    }
}

/// Starts (or attaches to) a detached `sys/init` and waits for its answer.
pub async fn init(node: &ExecNode, body: SecretBytes) -> Result<SecretAnswer, NodeError> {
    if node.data_dir().is_none() {
        tracing::warn!(
            pod = node.name(),
            "the server container mounts no PersistentVolumeClaim; the copy of the sys/init answer goes to HOME or TMPDIR and does not survive a pod deletion"
        );
    }
    let argv = vec![
        "sh".into(),
        "-c".into(),
        launch_script(),
        node.cli().binary().into(),
        node.data_dir().unwrap_or_default().into(),
    ];
    let launched: ExecOutput = node.run(argv, Some(body)).await?;
    if launched.exit_code != 0 {
        return Err(NodeError::Unreachable(format!(
            "could not start sys/init in pod {}: {}",
            node.name(),
            launched.stderr.lines().next().unwrap_or("the shell failed")
        )));
    }
    fail::fail_point!("init::sys_init_launched");
    wait_for_answer(node).await?.ok_or_else(|| {
        NodeError::Unreachable(format!(
            "sys/init in pod {} left no answer and no error",
            node.name()
        ))
    })
}

/// The answer of an earlier run, waiting for one still in flight.
pub async fn recover(node: &ExecNode) -> Result<Option<SecretAnswer>, NodeError> {
    wait_for_answer(node).await
}

/// Removes the copy and its companions from every folder it may be in.
pub async fn clear(node: &ExecNode) -> Result<(), NodeError> {
    let files: Vec<String> = search_dirs(node)
        .into_iter()
        .filter(|d| !d.is_empty())
        .flat_map(|d| {
            ["", ".req", ".part", ".run", ".failed", ".err"]
                .map(|suffix| format!("\"{d}/{INIT_COPY}{suffix}\""))
                .into_iter()
                .chain(
                    [".part.*", ".err.*", ".run.*"]
                        .map(|glob| format!("\"{d}/{INIT_COPY}\"{glob}")),
                )
        })
        .collect();
    let out = node
        .run(
            vec![
                "sh".into(),
                "-c".into(),
                format!("rm -f {}", files.join(" ")),
            ],
            None,
        )
        .await?;
    match out.exit_code {
        0 => Ok(()),
        code => Err(parse_cli_error(&out.stderr, code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A fake CLI: `$0 write -format=json sys/init -` echoes stdin after a delay.
    fn fake_cli(dir: &std::path::Path, body: &str) -> String {
        let path = dir.join("fakecli");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    fn poll(dir: &str) -> (i32, String, String) {
        sh(&poll_script(), &["sh", dir], "")
    }

    #[test]
    fn the_detached_call_outlives_its_launcher_and_leaves_the_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let cli = fake_cli(tmp.path(), "sleep 1; cat");
        let dir = tmp.path().display().to_string();
        let (code, _, err) = sh(&launch_script(), &[&cli, &dir], r#"{"root_token":"x"}"#);
        assert_eq!(code, 0, "{err}");
        // The launcher has returned; the call is still in flight.
        assert_eq!(poll(&dir).0, RUNNING);
        // A second launch attaches instead of calling again.
        let (code, _, _) = sh(&launch_script(), &[&cli, &dir], "{}");
        assert_eq!(code, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            let (code, out, _) = poll(&dir);
            if code == 0 {
                break out;
            }
            assert_eq!(code, RUNNING);
            assert!(Instant::now() < deadline, "no answer");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(answer, r#"{"root_token":"x"}"#);
        let mode = std::fs::metadata(tmp.path().join(INIT_COPY)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_call_reports_the_cli_error_and_a_dead_run_is_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let cli = fake_cli(tmp.path(), "echo 'Code: 400. Errors:' >&2; exit 2");
        let dir = tmp.path().display().to_string();
        assert_eq!(poll(&dir).0, NOTHING);
        sh(&launch_script(), &[&cli, &dir], "{}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, _, err) = poll(&dir);
            if code == FAILED {
                assert!(err.contains("Code: 400"), "{err}");
                break;
            }
            assert!(Instant::now() < deadline, "no failure seen: {code}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // A run whose process is gone with no answer.
        std::fs::remove_file(tmp.path().join(format!("{INIT_COPY}.failed"))).unwrap();
        std::fs::write(tmp.path().join(format!("{INIT_COPY}.run")), "999999999").unwrap();
        assert_eq!(poll(&dir).0, VANISHED);
        // A launcher killed before it handed over sent nothing.
        std::fs::write(
            tmp.path().join(format!("{INIT_COPY}.run")),
            "starting 999999999",
        )
        .unwrap();
        assert_eq!(poll(&dir).0, NOTHING);
        // An empty run file is one being written (the writers rename it into
        // place now, but an older launcher truncated and wrote): in flight,
        // never "vanished". A poll that read it between the two steps used
        // to fail init with "ended without an answer".
        std::fs::write(tmp.path().join(format!("{INIT_COPY}.run")), "").unwrap();
        assert_eq!(poll(&dir).0, RUNNING);
    }

    #[test]
    fn polls_racing_a_launch_never_see_a_vanished_run() {
        let tmp = tempfile::tempdir().unwrap();
        let cli = fake_cli(tmp.path(), "sleep 0.3; cat");
        let dir = tmp.path().display().to_string();
        let launcher = {
            let (cli, dir) = (cli.clone(), dir.clone());
            std::thread::spawn(move || sh(&launch_script(), &[&cli, &dir], "{}"))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, out, err) = poll(&dir);
            assert_ne!(code, VANISHED, "{err}");
            if code == 0 {
                assert_eq!(out, "{}");
                break;
            }
            assert!(Instant::now() < deadline, "no answer: {code}");
        }
        assert_eq!(launcher.join().unwrap().0, 0);
    }
}
