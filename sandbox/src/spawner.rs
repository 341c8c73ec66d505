//! Starting and killing server processes so that none outlives its owner.
//!
//! Owns one long-lived thread that forks every `bao server`: Linux sends the
//! parent-death signal when the *thread* that forked exits, so forking from a
//! tokio worker or blocking-pool thread could kill a server early. Children run
//! in their own process group with `PR_SET_PDEATHSIG = SIGKILL`.
//! What a server is started with (config, env) is decided by [`crate::pod`].

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

type Job = (Command, mpsc::Sender<io::Result<Child>>);

/// The forking thread. Dropping it ends the thread, which SIGKILLs any child still alive.
pub struct Spawner {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Spawner {
    /// Starts the forking thread.
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("sandbox-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Spawns `cmd` in its own process group, SIGKILLed if the spawner thread dies.
    pub fn spawn(&self, mut cmd: Command) -> io::Result<ServerProcess> {
        cmd.process_group(0);
        // SAFETY: the closure only calls async-signal-safe libc functions.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        {
            let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let tx = guard
                .as_ref()
                .ok_or_else(|| io::Error::other("spawner stopped"))?;
            tx.send((cmd, reply_tx))
                .map_err(|_| io::Error::other("spawner thread gone"))?;
        }
        let child = reply_rx
            .recv()
            .map_err(|_| io::Error::other("spawner thread gone"))??;
        Ok(ServerProcess { child })
    }

    /// Ends the forking thread (after the caller killed the children).
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running server; killed with SIGKILL and reaped by [`ServerProcess::kill`].
pub struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited on its own (reaps it if so).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERMs the process group, as the kubelet does once a pod's preStop
    /// hook has run; the server shuts down on its own.
    pub fn terminate(&self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: plain syscall on a process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
        }
    }

    /// SIGKILLs the whole process group and waits for the server to be reaped.
    pub fn kill(mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: plain syscall on a process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_process_is_killed_and_reaped() {
        let spawner = Spawner::new().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = spawner.spawn(cmd).unwrap();
        let pid = p.pid();
        assert!(!p.has_exited());
        p.kill();
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
