//! Runs an unpacked image the way a container runtime does: `chroot` into
//! its files only, as the user its config names, with its entrypoint and
//! environment (and HOME from its /etc/passwd). Namespaces, cgroups and
//! mounts are left out; the test adds the one file a runtime mounts that the
//! binary reads, /etc/hosts.

use super::text;
use base64::Engine;
use sandbox::Cluster;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// coreutils' `chroot`, found on this process's PATH: the runs clear the
/// environment to the image's, whose PATH is the image's own.
pub(super) fn chroot() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chroot"))
        .find(|p| p.is_file())
        .expect("chroot (coreutils) on PATH")
}

/// The unpacked image and the config a runtime would run it with.
pub(super) struct Image {
    pub(super) rootfs: PathBuf,
    pub(super) config: Value,
}

impl Image {
    /// `config.User` as uid:gid.
    pub(super) fn user(&self) -> (u32, u32) {
        let user = self.config["config"]["User"].as_str().expect("User");
        let (u, g) = user.split_once(':').expect("uid:gid");
        (u.parse().expect("uid"), g.parse().expect("gid"))
    }

    /// The user's home from the image's own /etc/passwd, as a runtime sets HOME.
    pub(super) fn home(&self) -> String {
        let (uid, _) = self.user();
        let passwd = std::fs::read_to_string(self.rootfs.join("etc/passwd")).expect("passwd");
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() == 7 && f[2] == uid.to_string())
            .map(|f| f[5].to_owned())
            .unwrap_or_else(|| panic!("no uid {uid} in the image's /etc/passwd:\n{passwd}"))
    }

    /// `chroot` into the image as its user, running its entrypoint with
    /// `args`, in its environment (and HOME) only.
    pub(super) fn command(&self, args: &[&str]) -> tokio::process::Command {
        let (uid, gid) = self.user();
        let mut command = tokio::process::Command::new(chroot());
        command
            .arg(format!("--userspec={uid}:{gid}"))
            .arg(&self.rootfs)
            .args(
                self.config["config"]["Entrypoint"]
                    .as_array()
                    .expect("Entrypoint")
                    .iter()
                    .map(|a| a.as_str().expect("entrypoint arg")),
            )
            .args(args)
            .env_clear()
            .env("HOME", self.home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for kv in self.config["config"]["Env"].as_array().expect("Env") {
            let (k, v) = kv.as_str().expect("K=V").split_once('=').expect("K=V");
            command.env(k, v);
        }
        command
    }

    /// Runs the entrypoint with `args`: (exit code, stdout, stderr).
    pub(super) async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .expect("the image's binary ran past 120 s")
            .expect("run chroot");
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    }

    /// Writes `contents` at `path` in the image's filesystem, owned by its
    /// user (0600), with the user's directories on the way.
    pub(super) fn write_as_user(&self, path: &str, contents: &str) {
        let (uid, gid) = self.user();
        let target = self.rootfs.join(path.trim_start_matches('/'));
        let dir = target.parent().expect("a parent");
        std::fs::create_dir_all(dir).expect("mkdir");
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown dir");
        std::fs::write(&target, contents).expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&target, Some(uid), Some(gid)).expect("chown");
    }
}

/// A kubeconfig for `server` with the sandbox's token and namespace, and the
/// CA inline when given.
pub(super) fn kubeconfig(cluster: &Cluster, server: &str, ca: Option<&str>) -> String {
    let ca = ca
        .map(|pem| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\n{ca}\
         users:\n- name: hook\n  user:\n    token: {}\n\
         contexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: hook\n    namespace: {}\n\
         current-context: sandbox\n",
        cluster.token(),
        cluster.namespace()
    )
}
