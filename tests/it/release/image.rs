//! `scripts/release --image`: the container image the chart runs, built
//! without a daemon, checked against its digests, then unpacked with GNU tar
//! and run the way a container runtime runs it: `chroot` into the image's
//! files only, as the user, with the entrypoint and environment its config
//! names, and the `/etc/hosts` a runtime mounts.
//!
//! The script packs the test-built binary (`--binary`), so CI compiles
//! nothing more for it; the release itself builds the release binary.

mod dockerfile;
mod runtime;

use super::{host, release, text, VERSION};
use crate::harness::plugin_binary;
use dockerfile::assert_dockerfile_matches;
use runtime::{chroot, kubeconfig, Image};
use sandbox::{Cluster, ClusterOptions};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
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
    // The bundle is the only thing that changes between this run and the
    // next; the refusal names the TLS verification.
    assert_ne!(code, 0, "trusted a CA that is not in the bundle:\n{stdout}");
    assert!(
        stderr.contains("is not trusted: TLS verification failed"),
        "{stderr}"
    );
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
