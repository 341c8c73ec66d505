//! `scripts/release --image`: the container image the chart runs, built
//! without a daemon, checked against its digests, then unpacked with GNU tar
//! and run the way a container runtime runs it: `chroot` into the image's
//! files only, as the user, with the entrypoint and environment its config
//! names, and the `/etc/hosts` a runtime mounts.
//!
//! The script packs the test-built binary (`--binary`), so CI compiles
//! nothing more for it; the release itself builds the release binary.

use super::{host, release, text, VERSION};
use crate::harness::plugin_binary;
use base64::Engine;
use sandbox::{Cluster, ClusterOptions};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The user the chart's pods run as (`runAsUser`) and the image declares.
const USER: u32 = 65532;
const ENTRYPOINT: &str = "/usr/local/bin/kubectl-vault";
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `sha256sum` of a file: the blobs are tens of MB, and the test build's
/// sha2 is unoptimized.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned()
}

/// The blob a descriptor names, checked against its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    assert_eq!(sha256sum(&path), hex, "blob {digest} matches its digest");
    let size = std::fs::metadata(&path).expect("blob").len();
    assert_eq!(
        descriptor["size"].as_u64(),
        Some(size),
        "blob {digest} size"
    );
    path
}

/// coreutils' `chroot`, found on this process's PATH: the runs clear the
/// environment to the image's, whose PATH is the image's own.
fn chroot() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chroot"))
        .find(|p| p.is_file())
        .expect("chroot (coreutils) on PATH")
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read JSON")).expect("JSON")
}

/// The chart's default image: `image.repository` and, with `image.tag`
/// empty, the chart's appVersion.
fn chart_default_image() -> String {
    let chart = manifest_dir().join("helm-hooks");
    let values: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(chart.join("values.yaml")).expect("values.yaml"))
            .expect("values.yaml is YAML");
    let meta: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(chart.join("Chart.yaml")).expect("Chart.yaml"))
            .expect("Chart.yaml is YAML");
    let repository = values["image"]["repository"].as_str().expect("repository");
    let tag = values["image"]["tag"].as_str().unwrap_or_default();
    let tag = if tag.is_empty() {
        meta["appVersion"].as_str().expect("appVersion")
    } else {
        tag
    };
    format!("{repository}:{tag}")
}

/// Every file under `root`, relative, with its metadata (symlinks not followed).
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                pending.push(path.clone());
            }
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            out.push((relative, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What the image may hold besides directories: the binary, the shared
/// libraries and loader it links, the CA bundle, passwd/group/nsswitch and
/// the Debian copyright files of what was copied. No shell, no package
/// manager, nothing else.
fn allowed(path: &Path) -> bool {
    let p = path.to_string_lossy();
    let lib = (p.starts_with("lib") || p.starts_with("usr/lib"))
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".so"));
    let copyright = p.starts_with("usr/share/doc/") && p.ends_with("/copyright");
    lib || copyright
        || [
            "usr/local/bin/kubectl-vault",
            CA_BUNDLE,
            "etc/passwd",
            "etc/group",
            "etc/nsswitch.conf",
        ]
        .contains(&p.as_ref())
}

/// The unpacked image and the config a runtime would run it with.
struct Image {
    rootfs: PathBuf,
    config: Value,
}

impl Image {
    /// `config.User` as uid:gid.
    fn user(&self) -> (u32, u32) {
        let user = self.config["config"]["User"].as_str().expect("User");
        let (u, g) = user.split_once(':').expect("uid:gid");
        (u.parse().expect("uid"), g.parse().expect("gid"))
    }

    /// The user's home from the image's own /etc/passwd, as a runtime sets HOME.
    fn home(&self) -> String {
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
    fn command(&self, args: &[&str]) -> tokio::process::Command {
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
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
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
    fn write_as_user(&self, path: &str, contents: &str) {
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
fn kubeconfig(cluster: &Cluster, server: &str, ca: Option<&str>) -> String {
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

/// The Dockerfile's final stage, instruction by instruction (continuations joined).
fn dockerfile_final_stage() -> (String, Vec<(String, String)>) {
    let dockerfile =
        std::fs::read_to_string(manifest_dir().join("Dockerfile")).expect("Dockerfile");
    let joined = dockerfile.replace("\\\n", " ");
    let (build, last) = joined
        .rsplit_once("\nFROM ")
        .expect("a multi-stage Dockerfile");
    let instructions = last
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_owned(), rest.trim().to_owned())
        })
        .collect();
    (
        format!("{build}\nFROM {}", last.lines().next().unwrap_or_default()),
        instructions,
    )
}

/// `KEY=VALUE KEY2="VALUE 2"` (ENV, LABEL) into pairs.
fn dockerfile_pairs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("KEY=VALUE");
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, a) = quoted.split_once('"').expect("closing quote");
            (v.to_owned(), a)
        } else {
            let (v, a) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            (v.to_owned(), a)
        };
        out.push((key.trim().to_owned(), value));
        rest = after.trim();
    }
    out
}

/// The Dockerfile builds the same image: its build stage lays out the files
/// with scripts/image-rootfs, its final stage is `scratch` plus those files
/// with the config the release writes (labels' values come from build args).
fn assert_dockerfile_matches(config: &Value) {
    let (build, stage) = dockerfile_final_stage();
    assert!(build.ends_with("\nFROM scratch"), "final stage: {build}");
    assert!(
        build.contains("scripts/image-rootfs target/release/kubectl-vault /rootfs"),
        "the build stage lays out the files with scripts/image-rootfs"
    );
    let c = &config["config"];
    let mut env = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let mut copies = Vec::new();
    for (op, rest) in &stage {
        match op.as_str() {
            "ENV" => env.extend(
                dockerfile_pairs(rest)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}")),
            ),
            "LABEL" => labels.extend(dockerfile_pairs(rest).into_iter().map(|(k, _)| k)),
            "USER" => assert_eq!(c["User"], rest.as_str(), "USER"),
            "WORKDIR" => assert_eq!(c["WorkingDir"], rest.as_str(), "WORKDIR"),
            "ENTRYPOINT" => assert_eq!(
                c["Entrypoint"],
                serde_json::from_str::<Value>(rest).expect("ENTRYPOINT is JSON")
            ),
            "CMD" => assert_eq!(
                c["Cmd"],
                serde_json::from_str::<Value>(rest).expect("CMD is JSON")
            ),
            "COPY" => copies.push(rest.clone()),
            "ARG" => {}
            other => panic!("unexpected {other} in the Dockerfile's final stage"),
        }
    }
    let want_env: BTreeSet<String> = c["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .map(|v| v.as_str().expect("env").to_owned())
        .collect();
    assert_eq!(env, want_env, "ENV");
    let want_labels: BTreeSet<String> = c["Labels"]
        .as_object()
        .expect("Labels")
        .keys()
        .cloned()
        .collect();
    assert_eq!(labels, want_labels, "LABEL keys");
    assert_eq!(
        copies.first().map(String::as_str),
        Some("--from=build /rootfs/ /"),
        "{copies:?}"
    );
}

#[tokio::test]
async fn release_image_runs_as_nonroot_with_only_its_own_files() {
    // Build it from the test binary.
    let out = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let run = release(out.path(), &plugin_binary(), &["--image"]);
    let build_time = started.elapsed();
    let stderr = text(&run.stderr);
    assert!(
        run.status.success(),
        "scripts/release --image failed:\n{stderr}"
    );
    let (os, arch) = host();
    let name = format!("kubectl-vault-{VERSION}-{os}-{arch}");
    let layout = out.path().join(format!("{name}-oci"));
    let tarball = out.path().join(format!("{name}-image.tar"));

    // The OCI layout: one manifest, tagged with the version, whose digest
    // SHA256SUMS lists (as the manifest's blob, so `sha256sum -c` checks it);
    // every blob matches its digest.
    let index = json_file(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        VERSION
    );
    let manifest_path = blob(&layout, &manifests[0]);
    let digest = manifests[0]["digest"].as_str().expect("digest");
    let hex = digest.trim_start_matches("sha256:");
    let sums = std::fs::read_to_string(out.path().join("SHA256SUMS")).expect("SHA256SUMS");
    let listed: BTreeSet<&str> = sums.lines().collect();
    let manifest_line = format!("{hex}  {name}-oci/blobs/sha256/{hex}");
    let tarball_line = format!("{}  {name}-image.tar", sha256sum(&tarball));
    assert!(listed.contains(manifest_line.as_str()), "{sums}");
    assert!(listed.contains(tarball_line.as_str()), "{sums}");
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(out.path())
        .output()
        .expect("run sha256sum -c");
    assert!(check.status.success(), "{}", text(&check.stdout));
    let manifest = json_file(&manifest_path);
    let config_path = blob(&layout, &manifest["config"]);
    let config = json_file(&config_path);
    let layers: Vec<PathBuf> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            assert_eq!(
                l["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+gzip"
            );
            blob(&layout, l)
        })
        .collect();
    let compressed: u64 = [&manifest_path, &config_path]
        .into_iter()
        .chain(&layers)
        .map(|p| std::fs::metadata(p).expect("blob").len())
        .sum();
    assert!(
        stderr.contains(&format!("{digest}, {compressed} bytes compressed")),
        "the release reports the image's digest and size:\n{stderr}"
    );

    // The config: this platform, user 65532, the entrypoint the chart's pods
    // rely on (they pass only arguments), and the OCI labels.
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], arch);
    let c = &config["config"];
    assert_eq!(c["User"], format!("{USER}:{USER}").as_str());
    assert_eq!(c["Entrypoint"], serde_json::json!([ENTRYPOINT]));
    let labels = &c["Labels"];
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(manifest_dir())
        .output()
        .expect("git rev-parse");
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        text(&revision.stdout).trim()
    );
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/kubectl-vault/kubectl-vault"
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    assert_dockerfile_matches(&config);

    // The docker-archive is the same image under the chart's default name.
    let archived = Command::new("tar")
        .args(["-xOf"])
        .arg(&tarball)
        .arg("manifest.json")
        .output()
        .expect("tar");
    assert!(archived.status.success(), "{}", text(&archived.stderr));
    let archived: Value = serde_json::from_slice(&archived.stdout).expect("manifest.json");
    assert_eq!(
        archived[0]["RepoTags"],
        serde_json::json!([chart_default_image()]),
        "the chart's default image.repository:tag"
    );
    assert_eq!(
        archived[0]["Config"],
        format!(
            "{}.json",
            manifest["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("sha256:")
        )
        .as_str(),
        "same config, so the same image ID"
    );
    assert_eq!(
        archived[0]["Layers"].as_array().map(Vec::len),
        Some(layers.len())
    );

    // Unpacked with GNU tar (strict about the end of the archive), each
    // layer's content is the diff_id the config names.
    let unpacked = tempfile::tempdir().expect("tempdir");
    let rootfs = unpacked.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir rootfs");
    for (i, layer) in layers.iter().enumerate() {
        let untar = Command::new("tar")
            .args(["--numeric-owner", "-xpzf"])
            .arg(layer)
            .arg("-C")
            .arg(&rootfs)
            .output()
            .expect("run tar");
        assert!(untar.status.success(), "layer {i}: {}", text(&untar.stderr));
        let diff = Command::new("sh")
            .args(["-c", "gzip -dc \"$1\" | sha256sum", "sh"])
            .arg(layer)
            .output()
            .expect("gzip | sha256sum");
        assert_eq!(
            config["rootfs"]["diff_ids"][i],
            format!(
                "sha256:{}",
                text(&diff.stdout).split_whitespace().next().unwrap_or("")
            )
            .as_str(),
            "layer {i} diff_id"
        );
    }

    // Only what the binary needs: nothing else, no shell, root-owned but
    // for the user's home.
    let files = walk(&rootfs);
    let mut unexpected = Vec::new();
    let mut unpacked_size = 0;
    for (path, meta) in &files {
        if meta.is_dir() {
            continue;
        }
        unpacked_size += meta.len();
        if !meta.is_file() || !allowed(path) {
            unexpected.push(path.display().to_string());
        }
    }
    assert!(
        unexpected.is_empty(),
        "the image holds more than the binary needs: {unexpected:?}"
    );
    for (path, meta) in &files {
        let home = path.starts_with("home/nonroot");
        let owner = if home { USER } else { 0 };
        assert_eq!(
            (meta.uid(), meta.gid()),
            (owner, owner),
            "owner of {}",
            path.display()
        );
    }
    let mode = |p: &str| {
        std::fs::symlink_metadata(rootfs.join(p))
            .unwrap_or_else(|_| panic!("no {p} in the image"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("home/nonroot"), 0o700);
    assert_eq!(mode("tmp"), 0o1777);
    let binary_size = std::fs::metadata(rootfs.join("usr/local/bin/kubectl-vault"))
        .expect("the binary")
        .len();
    assert_eq!(
        sha256sum(&rootfs.join("usr/local/bin/kubectl-vault")),
        sha256sum(&plugin_binary()),
        "the binary is the one packed"
    );
    let certs = std::fs::read_to_string(rootfs.join(CA_BUNDLE)).expect("the CA bundle");
    assert!(
        certs.matches("-----BEGIN CERTIFICATE-----").count() > 50,
        "a CA bundle, not a stub"
    );
    // The report: the release binary's image differs only by the binary.
    let rest = unpacked_size - binary_size;
    eprintln!(
        "image size: {compressed} bytes compressed, {unpacked_size} unpacked \
         (the binary {binary_size}, everything else {rest}); \
         scripts/release --image took {:.1} s",
        build_time.as_secs_f64()
    );
    assert!(
        rest < 8 << 20,
        "besides the binary the image holds {rest} bytes"
    );

    // What a container runtime adds: /etc/hosts (the kubelet mounts one).
    std::fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n",
    )
    .expect("write /etc/hosts");
    let image = Image {
        rootfs: rootfs.clone(),
        config,
    };
    assert_eq!(image.home(), "/home/nonroot");

    // It runs, seeing only its own files: version and the hook's help.
    let (code, stdout, stderr) = image.run(&["version"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("kubectl-vault {VERSION}"));
    let (code, stdout, stderr) = image.run(&["hook", "--help"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("Usage: kubectl vault hook"),
        "{stdout}{stderr}"
    );

    // There is no shell to run.
    let shell = tokio::process::Command::new(chroot())
        .arg(format!("--userspec={USER}:{USER}"))
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "true"])
        .output()
        .await
        .expect("run chroot");
    assert!(!shell.status.success(), "the image has a shell");

    // `status` against a sandbox over HTTPS, from ~/.kube/config in the
    // image: the server is named `localhost` (resolved through the image's
    // nsswitch.conf and the runtime's /etc/hosts) and the certificate is
    // checked against the sandbox's CA.
    let cluster = Cluster::start(ClusterOptions::openbao().tls(true).replicas(1))
        .await
        .expect("start sandbox");
    let ca = cluster
        .ca_pem()
        .expect("the sandbox serves HTTPS")
        .to_owned();
    let port = cluster
        .server_url()
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .expect("a port");
    assert!(cluster.server_url().starts_with("https://"));
    let server = format!("https://localhost:{port}");
    let home = image.home();
    image.write_as_user(
        &format!("{home}/.kube/config"),
        &kubeconfig(&cluster, &server, Some(&ca)),
    );
    let (code, stdout, stderr) = image.run(&["--no-progress", "status", "-o", "json"]).await;
    assert_eq!(code, 0, "status in the image failed:\n{stdout}{stderr}");
    let status: Value = serde_json::from_str(&stdout).expect("status is JSON");
    assert_eq!(status["namespace"], cluster.namespace());
    let pods: Vec<&str> = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(pods, cluster.pod_names(), "{status}");
    // Read from the server itself, through pods/exec over the same TLS.
    assert_eq!(status["pods"][0]["initialized"], false, "{status}");
    assert_eq!(status["pods"][0]["sealed"], true, "{status}");

    // The image's CA bundle is the one its TLS uses when the kubeconfig
    // names no CA: refused while the sandbox's CA is not in it, accepted
    // once it is (this test's copy of the image; a derived image adding a
    // private CA does the same).
    let bare = format!("{home}/.kube/no-ca");
    image.write_as_user(&bare, &kubeconfig(&cluster, &server, None));
    let args = ["--no-progress", "--kubeconfig", bare.as_str(), "status"];
    let (code, stdout, stderr) = image.run(&args).await;
    // The binary reports a failed TLS handshake as a connect error without
    // its cause; the bundle is the only thing that changes between this run
    // and the next.
    assert_ne!(code, 0, "trusted a CA that is not in the bundle:\n{stdout}");
    assert!(stderr.contains("could not list pods"), "{stderr}");
    let mut bundle = certs.clone();
    bundle.push_str(&ca);
    std::fs::write(rootfs.join(CA_BUNDLE), bundle).expect("append the CA");
    let (code, stdout, stderr) = image.run(&args).await;
    assert_eq!(code, 0, "with the CA in the bundle:\n{stdout}{stderr}");

    // Running, the process is uid and gid 65532 with no other group, and
    // its root is the image: caught while it waits for a TLS handshake
    // from a listener that never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stall_port = listener.local_addr().expect("addr").port();
    let stall = format!("{home}/.kube/stall");
    image.write_as_user(
        &stall,
        &kubeconfig(
            &cluster,
            &format!("https://localhost:{stall_port}"),
            Some(&ca),
        ),
    );
    let mut child = image
        .command(&["--no-progress", "--kubeconfig", &stall, "status"])
        .spawn()
        .expect("spawn chroot");
    let pid = child.id().expect("pid");
    let (conn, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("the image's binary never connected")
        .expect("accept");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let user = USER.to_string();
    assert_eq!(field("Uid"), vec![user.as_str(); 4], "{proc_status}");
    assert_eq!(field("Gid"), vec![user.as_str(); 4], "{proc_status}");
    assert!(field("Groups").iter().all(|g| *g == user), "{proc_status}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).expect("proc root"),
        std::fs::canonicalize(&rootfs).expect("rootfs"),
        "the process's root is the image"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).expect("proc exe"),
        std::fs::canonicalize(rootfs.join("usr/local/bin/kubectl-vault")).expect("binary"),
    );
    drop(conn);
    child.kill().await.expect("kill");
}
