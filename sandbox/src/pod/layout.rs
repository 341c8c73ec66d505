//! A pod's folder, `<dir>/pods/NAME-i/{data,home,tmp,config.hcl,server.log,bin,ip}`:
//! which of its volumes a container restart or a new pod empties, whose they
//! are, and the logs of its container's starts.
//!
//! What goes into the config and how the server starts is [`super::server`]'s.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::{running_as_root, CONTAINER_GID, CONTAINER_UID};

/// The folder of one pod.
#[derive(Clone, Debug)]
pub struct PodLayout {
    /// `<dir>/pods/NAME-i`.
    pub dir: PathBuf,
}

impl PodLayout {
    /// Layout of pod `name` under the cluster folder.
    pub fn new(cluster_dir: &Path, name: &str) -> Self {
        Self {
            dir: cluster_dir.join("pods").join(name),
        }
    }

    /// Raft storage: deleting it is losing the PVC.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The main container's HOME: an emptyDir, as the charts mount it (kept
    /// across container restarts, emptied when the pod is deleted).
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The container's `/tmp` (exec'd commands get it as `TMPDIR`): its
    /// writable layer, emptied on every container restart.
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// A container restart: its writable layer (`/tmp`) starts empty.
    pub fn reset_container_files(&self) -> io::Result<()> {
        reset_dir(&self.tmp())
    }

    /// A new pod (created, or recreated after a deletion): emptyDir volumes
    /// and the container layer start empty; the PVC (`data`) is kept.
    pub fn reset_pod_files(&self) -> io::Result<()> {
        reset_dir(&self.home())?;
        reset_dir(&self.tmp())
    }

    /// The cluster folder this pod's folder sits in (`<dir>`).
    pub fn cluster_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// `config.hcl`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.hcl")
    }

    /// The second config file of [`crate::SealIn::JsonConfig`].
    pub fn seal_json(&self) -> PathBuf {
        self.dir.join("seal.json")
    }

    /// The server's stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Prepended to the main container's PATH.
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }

    pub(super) fn ip_file(&self) -> PathBuf {
        self.dir.join("ip")
    }

    /// The volumes a container writes (the PVC, HOME, `/tmp`) belong to the
    /// charts' container user, as `fsGroup` and the image arrange it; the
    /// pod folder itself, the exec'd commands' working directory, stays
    /// root's and is not writable to them. Only when the sandbox runs as
    /// root, the only way it can hand files to another user.
    pub(super) fn grant_volumes(&self) -> io::Result<()> {
        if !running_as_root() {
            return Ok(());
        }
        for dir in [self.data(), self.home(), self.tmp()] {
            std::os::unix::fs::chown(&dir, Some(CONTAINER_UID), Some(CONTAINER_GID))?;
        }
        Ok(())
    }

    /// The IP this pod had in an earlier run of the same folder, if any.
    pub fn previous_ip(&self) -> Option<Ipv4Addr> {
        std::fs::read_to_string(self.ip_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Deletes the raft data (the PVC is lost) and recreates an empty folder.
    pub fn wipe_data(&self) -> io::Result<()> {
        reset_dir(&self.data())
    }

    /// What each start of the server container wrote, oldest first.
    /// `server.log` keeps every start (tests count `sys/init`s in it); a
    /// marker line before each start splits it into container instances,
    /// as the kubelet keeps the current and the previous one.
    pub fn container_logs(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let mut out = vec![String::new()];
        for line in text.split_inclusive('\n') {
            if line.trim_end() == START_MARKER {
                out.push(String::new());
            } else if let Some(last) = out.last_mut() {
                last.push_str(line);
            }
        }
        if out.len() > 1 && out[0].is_empty() {
            out.remove(0);
        }
        out
    }

    /// The last lines of the current container's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.container_logs().pop().unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// The line `server.log` gets before each start of the server; never served.
pub(super) const START_MARKER: &str = "#kube-sandbox: container started";

/// Empties `dir` (creating it if missing).
fn reset_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_splits_into_container_instances_at_each_start() {
        let dir = tempfile::tempdir().unwrap();
        let l = PodLayout::new(dir.path(), "openbao-0");
        std::fs::create_dir_all(l.log().parent().unwrap()).unwrap();
        assert_eq!(l.container_logs(), [""]);
        let text = format!("{START_MARKER}\na\nb\n{START_MARKER}\nc\n");
        std::fs::write(l.log(), text).unwrap();
        assert_eq!(l.container_logs(), ["a\nb\n", "c\n"]);
        assert_eq!(l.log_tail(), "c");
    }
}
