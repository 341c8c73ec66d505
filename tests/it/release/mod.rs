//! `scripts/release`: the archive and the krew manifest agree on the sha256,
//! the packed binary runs, and the real kubectl discovers it as `kubectl vault`.
//!
//! The script packs the test-built binary (`--binary`) so no release build runs.
//! `image` checks the container image `--image` adds.

mod image;

use crate::harness::{deps_bin, plugin_binary};
use serde_yaml::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = env!("CARGO_PKG_VERSION");

const PLATFORMS: [(&str, &str); 6] = [
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
    ("windows", "amd64"),
    ("windows", "arm64"),
];

fn host() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (os, arch)
}

fn archive_name(os: &str, arch: &str) -> String {
    format!("kubectl-vault-{VERSION}-{os}-{arch}.tar.gz")
}

fn release(out: &Path, binary: &Path, extra: &[&str]) -> Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/release"))
        .arg("--out")
        .arg(out)
        .arg("--binary")
        .arg(binary)
        .args(extra)
        // The tools scripts/install-deps provides (umoci, skopeo) first.
        .env("PATH", tools_path())
        .output()
        .expect("run scripts/release")
}

fn tools_path() -> std::ffi::OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(deps_bin()).chain(std::env::split_paths(&inherited)))
        .expect("PATH")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read archive");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn manifest(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("vault.yaml")).expect("vault.yaml");
    serde_yaml::from_str(&text).expect("manifest is YAML")
}

/// (os, arch) → the platform entry.
fn platform<'a>(manifest: &'a Value, os: &str, arch: &str) -> &'a Value {
    manifest["spec"]["platforms"]
        .as_sequence()
        .expect("platforms")
        .iter()
        .find(|p| {
            p["selector"]["matchLabels"]["os"] == os && p["selector"]["matchLabels"]["arch"] == arch
        })
        .unwrap_or_else(|| panic!("no {os}/{arch} platform"))
}

#[test]
fn release_archive_matches_its_manifest_and_runs_as_a_kubectl_plugin() {
    let out = tempfile::tempdir().expect("tempdir");
    let run = release(out.path(), &plugin_binary(), &[]);
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "scripts/release failed:\n{stderr}");
    let (os, arch) = host();
    let archive = out.path().join(archive_name(os, arch));
    assert_eq!(
        text(&run.stdout).trim(),
        archive.display().to_string(),
        "prints the archive it made"
    );

    // The manifest: a krew Plugin named vault, all six platforms.
    let m = manifest(out.path());
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "vault");
    let spec = &m["spec"];
    assert_eq!(spec["version"], format!("v{VERSION}").as_str());
    for field in ["shortDescription", "description", "caveats", "homepage"] {
        assert!(
            spec[field].as_str().is_some_and(|s| !s.trim().is_empty()),
            "{field}"
        );
    }
    assert!(spec["description"]
        .as_str()
        .unwrap_or_default()
        .contains("KubeVault"));
    let listed: BTreeSet<(String, String)> = spec["platforms"]
        .as_sequence()
        .expect("platforms")
        .iter()
        .map(|p| {
            let l = &p["selector"]["matchLabels"];
            (
                l["os"].as_str().unwrap_or_default().to_owned(),
                l["arch"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = PLATFORMS
        .iter()
        .map(|(o, a)| ((*o).to_owned(), (*a).to_owned()))
        .collect();
    assert_eq!(listed, want);
    for (o, a) in PLATFORMS {
        let p = platform(&m, o, a);
        let bin = if o == "windows" {
            "kubectl-vault.exe"
        } else {
            "kubectl-vault"
        };
        assert_eq!(p["bin"], bin);
        let uri = p["uri"].as_str().expect("uri");
        assert!(uri.starts_with("https://"), "{uri}");
        assert!(uri.ends_with(&format!("/{}", archive_name(o, a))), "{uri}");
    }

    // The host entry's sha256 is the archive's; the others wait for CI, and
    // the script says so.
    let sum = sha256_hex(&archive);
    assert_eq!(platform(&m, os, arch)["sha256"], sum.as_str());
    for (o, a) in PLATFORMS.into_iter().filter(|p| *p != (os, arch)) {
        assert_eq!(
            platform(&m, o, a)["sha256"],
            format!("@SHA256_{o}_{a}@").as_str()
        );
    }
    assert!(stderr.contains("placeholders stay"), "{stderr}");
    let sums = std::fs::read_to_string(out.path().join("SHA256SUMS")).expect("SHA256SUMS");
    assert_eq!(sums, format!("{sum}  {}\n", archive_name(os, arch)));

    // Unpacked, the binary runs on its own...
    let unpacked = tempfile::tempdir().expect("tempdir");
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .expect("run tar");
    assert!(tar.success());
    let bin = unpacked.path().join("kubectl-vault");
    let version = Command::new(&bin).arg("version").output().expect("run it");
    assert!(version.status.success(), "{}", text(&version.stderr));
    assert_eq!(
        text(&version.stdout).trim(),
        format!("kubectl-vault {VERSION}")
    );

    // ...and the real kubectl finds it on PATH as `kubectl vault`.
    let kubectl = |args: &[&str]| {
        let home = tempfile::tempdir().expect("tempdir");
        let path = std::env::join_paths([unpacked.path().to_path_buf(), deps_bin()]).expect("PATH");
        Command::new(deps_bin().join("kubectl"))
            .args(args)
            .env("PATH", path)
            .env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("no-kubeconfig"))
            .output()
            .expect("run kubectl")
    };
    let list = kubectl(&["plugin", "list"]);
    let listing = text(&list.stdout);
    assert!(
        listing.lines().any(|l| Path::new(l.trim()) == bin),
        "kubectl plugin list does not show {}:\n{listing}{}",
        bin.display(),
        text(&list.stderr)
    );
    let run = kubectl(&["vault", "version"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), format!("kubectl-vault {VERSION}"));
}

/// A stand-in binary: packing a real one is covered above.
fn fake_binary(dir: &Path) -> PathBuf {
    let path = dir.join("kubectl-vault");
    std::fs::write(&path, "#!/bin/sh\necho kubectl-vault\n").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    path
}

#[test]
fn release_renders_every_platform_from_a_sums_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let binary = fake_binary(work.path());
    let (os, arch) = host();

    // Without the other platforms' sums, --require-all refuses.
    let out = work.path().join("partial");
    let run = release(&out, &binary, &["--require-all"]);
    assert!(!run.status.success());
    assert!(text(&run.stderr).contains("--require-all"));

    // With them, every entry carries its archive's sum and nothing is left over.
    let mut given = String::new();
    for (i, (o, a)) in PLATFORMS.into_iter().enumerate() {
        if (o, a) != (os, arch) {
            given += &format!("{}  {}\n", format!("{i:x}").repeat(64), archive_name(o, a));
        }
    }
    let sums_in = work.path().join("ci-sums");
    std::fs::write(&sums_in, &given).expect("write sums");
    let out = work.path().join("full");
    let sums_arg = sums_in.display().to_string();
    let run = release(&out, &binary, &["--sums", &sums_arg, "--require-all"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let rendered = std::fs::read_to_string(out.join("vault.yaml")).expect("vault.yaml");
    assert!(!rendered.contains('@'), "placeholder left:\n{rendered}");
    let m = manifest(&out);
    for (i, (o, a)) in PLATFORMS.into_iter().enumerate() {
        let want = if (o, a) == (os, arch) {
            sha256_hex(&out.join(archive_name(o, a)))
        } else {
            format!("{i:x}").repeat(64)
        };
        assert_eq!(platform(&m, o, a)["sha256"], want.as_str(), "{o}/{a}");
    }
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS");
    assert_eq!(sums.lines().count(), 6, "{sums}");

    // A malformed sums file is refused rather than rendered.
    std::fs::write(&sums_in, "not-a-sum  x.tar.gz\n").expect("write");
    let run = release(&work.path().join("bad"), &binary, &["--sums", &sums_arg]);
    assert!(!run.status.success());
}
