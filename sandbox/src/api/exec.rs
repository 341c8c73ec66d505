//! `pods/exec`: runs argv as a local process in the pod's folder with the
//! container's environment, speaking the v4/v5 channel protocol.
//!
//! Owns container selection, stream pumping (stdout/stderr flushed before the
//! status frame), the Success/NonZeroExitCode Status and the dropped-stream
//! fault. The environment itself comes from [`crate::pod::exec_env`].

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::websocket::{self, normal_close, V4, V5};
use super::{Ctx, Reply};
use crate::pod::{self, ContainerKind};
use crate::render::SIDECAR;
use crate::state::Sandbox;
use crate::status::ApiError;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

struct Plan {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: std::path::PathBuf,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    /// The pod's network namespace (its own 127.0.0.1), joined before exec.
    netns: Option<Arc<crate::loopback::PodLoopback>>,
}

fn flag(ctx: &Ctx, key: &str) -> bool {
    matches!(ctx.param(key), Some("true" | "1"))
}

/// Validates the request, answers 101 and runs the command on the upgraded socket.
pub fn handle(s: &Arc<Sandbox>, ctx: &Ctx, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    let opts = s.fleet.options();
    let pod = s
        .fleet
        .pod(&i.name)
        .filter(|p| p.running && i.namespace == opts.namespace)
        .ok_or_else(|| ApiError::not_found("", "pods", &i.name))?;
    let mut containers = vec![opts.container()];
    if opts.sidecar {
        containers.insert(0, SIDECAR);
    }
    let container = ctx
        .param("container")
        .filter(|c| !c.is_empty())
        .unwrap_or(containers[0]);
    let kind = match container {
        c if c == opts.container() => ContainerKind::Main,
        c if opts.sidecar && c == SIDECAR => ContainerKind::Sidecar,
        c => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.name
            )))
        }
    };
    let argv = ctx.params_all("command");
    if argv.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let layout = s.fleet.layout(&pod.name);
    let plan = Plan {
        netns: s.fleet.loopback(&pod.name),
        env: pod::exec_env(opts, &layout, &pod.name, pod.ip, kind),
        cwd: layout.dir,
        argv,
        stdin: flag(ctx, "stdin"),
        stdout: flag(ctx, "stdout"),
        stderr: flag(ctx, "stderr"),
        tty: flag(ctx, "tty"),
    };
    let (response, protocol) = websocket::accept(ctx, &[V5, V4])?;
    let drop_stream = s.faults.take_exec_drop();
    tokio::spawn(async move {
        if let Some(socket) = websocket::upgraded(req).await {
            run(socket, protocol == V5, plan, drop_stream).await;
        }
    });
    Ok(Reply::Raw(response))
}

/// Becomes the charts' container user (uid 100, fsGroup 1000, no other
/// groups), as runc starts an exec'd process. Like runc, it first hands the
/// stdio pipes to that user, so that the process can open `/dev/stdout`
/// (`bao operator raft snapshot save /dev/stdout`); `/dev/null` and other
/// devices are left alone.
fn become_container_user(uid: u32, gid: u32) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    for fd in 0..3 {
        // SAFETY: fstat on a descriptor this process owns, into a local.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            continue;
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFIFO || kind == libc::S_IFSOCK {
            // SAFETY: plain syscall on our own descriptor.
            check(unsafe { libc::fchown(fd, uid, gid) })?;
        }
    }
    // SAFETY: plain syscalls; order matters: groups and gid before uid.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))
    }
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

async fn pump(mut r: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(frame(channel, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {}, "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", argv.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn start_failure(argv: &[String], e: &std::io::Error) -> Value {
    let what = if e.kind() == std::io::ErrorKind::NotFound {
        format!("exec: {:?}: executable file not found in $PATH", argv[0])
    } else {
        format!("exec: {:?}: {e}", argv[0])
    };
    json!({
        "metadata": {}, "status": "Failure",
        "message": format!("Internal error occurred: error executing command in container: failed to exec in container: OCI runtime exec failed: exec failed: unable to start container process: {what}: unknown"),
        "reason": "InternalError", "code": 500,
        "details": {"causes": [{"message": what}]},
    })
}

async fn run(socket: websocket::Socket, v5: bool, plan: Plan, drop_stream: bool) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.flush().await;
        sink
    });
    // The reader drains the socket until the client's close frame, so the
    // socket is never dropped with unread data (the kernel would answer with
    // a reset that can overtake the status frame). Stdin goes through a channel.
    // A client that disconnects without a close frame kills the command,
    // as the kubelet cancels an exec whose stream is gone.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Option<Bytes>>(16);
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            let data = match stream.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => {
                    let _ = gone_tx.send(());
                    break;
                }
            };
            match data.first() {
                Some(&STDIN) => {
                    let _ = stdin_tx.send(Some(data.slice(1..))).await;
                }
                Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => {
                    let _ = stdin_tx.send(None).await;
                }
                _ => {}
            }
        }
    });
    let mut cmd = tokio::process::Command::new(&plan.argv[0]);
    if let Some(netns) = plan.netns.as_ref().map(|n| n.netns()) {
        // SAFETY: the closure runs between fork and exec and only makes
        // an async-signal-safe syscall; `plan` keeps the descriptor open.
        unsafe {
            cmd.pre_exec(move || crate::loopback::enter(netns));
        }
    }
    if pod::running_as_root() {
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(|| become_container_user(pod::CONTAINER_UID, pod::CONTAINER_GID));
        }
    }
    cmd.args(&plan.argv[1..])
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .stdin(if plan.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if plan.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if plan.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .kill_on_drop(true);
    let status = match cmd.spawn() {
        Err(e) => start_failure(&plan.argv, &e),
        Ok(mut child) => {
            let mut pumps = Vec::new();
            if let Some(out) = child.stdout.take() {
                pumps.push(tokio::spawn(pump(out, STDOUT, tx.clone())));
            }
            if let Some(err) = child.stderr.take() {
                let ch = if plan.tty { STDOUT } else { STDERR };
                pumps.push(tokio::spawn(pump(err, ch, tx.clone())));
            }
            let stdin = child.stdin.take();
            let feeder = tokio::spawn(async move {
                let Some(mut w) = stdin else { return };
                while let Some(Some(data)) = stdin_rx.recv().await {
                    if w.write_all(&data).await.is_err() {
                        break;
                    }
                }
            });
            let client_gone = async {
                if gone_rx.await.is_err() {
                    futures::future::pending::<()>().await;
                }
            };
            let waited = tokio::select! {
                st = child.wait() => st,
                () = client_gone => {
                    if let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                        // SAFETY: plain syscall on the process group this exec created.
                        unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    }
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let code = match waited {
                Ok(st) => st.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + st.signal().unwrap_or(0)
                }),
                Err(_) => 1,
            };
            for p in pumps {
                let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
            }
            feeder.abort();
            exit_status(&plan.argv, code)
        }
    };
    // A dropped stream still gets its output and a clean close, just no
    // status frame. (An abrupt TCP reset would hang kube-rs 5 readers
    // forever: its error path never shuts its stdout pipes.)
    if !drop_stream {
        let _ = tx.send(frame(STATUS, status.to_string().as_bytes())).await;
    }
    let _ = tx.send(normal_close()).await;
    drop(tx);
    let sink = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    drop(sink);
}
