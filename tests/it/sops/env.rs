//! Where identities come from: the sops environment conventions, checked in
//! child processes so no test changes this process's environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubectl_vault::store::sops::{self, Format, Identities, SopsError};
use tempfile::TempDir;

use super::{keygen, opts};

/// Set on the child runs of [`sops_env_child`]: the directory holding the
/// documents and what the child should expect.
const CHILD_DIR: &str = "KUBECTL_VAULT_TEST_SOPS_ENV_DIR";
const CHILD_EXPECT: &str = "KUBECTL_VAULT_TEST_SOPS_ENV_EXPECT";

/// Runs [`sops_env_child`] in a fresh process of this test binary with `env`,
/// so no test changes the environment of this process.
fn run_env_child(dir: &Path, expect: &str, env: &[(&str, Option<&std::ffi::OsStr>)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "sops::env::sops_env_child",
        "--exact",
        "--ignored",
        "--nocapture",
    ])
    .env(CHILD_DIR, dir)
    .env(CHILD_EXPECT, expect);
    for (name, value) in env {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child ({expect}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn identities_follow_the_sops_environment_conventions() {
    let dir = TempDir::new().unwrap();
    let (a, b, c, x) = (
        keygen(dir.path(), "a"),
        keygen(dir.path(), "b"),
        keygen(dir.path(), "c"),
        keygen(dir.path(), "x"),
    );
    for (name, key) in [("a", &a), ("b", &b), ("c", &c)] {
        let doc = sops::encrypt("{\"k\":\"v\"}", Format::Json, &opts(&[key], None)).unwrap();
        std::fs::write(dir.path().join(format!("doc-{name}.json")), doc).unwrap();
    }
    // c sits in the default place: $XDG_CONFIG_HOME/sops/age/keys.txt, or
    // $HOME/.config/sops/age/keys.txt without XDG_CONFIG_HOME.
    let home = dir.path().join("home");
    let config = home.join(".config");
    std::fs::create_dir_all(config.join("sops/age")).unwrap();
    std::fs::copy(&c.file, config.join("sops/age/keys.txt")).unwrap();
    // Several keys in one variable, with comments, as sops accepts them.
    let env_keys = std::ffi::OsString::from(format!("{}\n# another\n{}", a.text, x.text));
    let missing = dir.path().join("missing.txt");
    let all = [
        ("SOPS_AGE_KEY", Some(env_keys.as_os_str())),
        ("SOPS_AGE_KEY_FILE", Some(b.file.as_os_str())),
        ("HOME", Some(home.as_os_str())),
        ("XDG_CONFIG_HOME", Some(config.as_os_str())),
    ];
    run_env_child(dir.path(), "abc", &all);
    let mut no_xdg = all;
    no_xdg[3].1 = None;
    run_env_child(dir.path(), "abc", &no_xdg);
    let mut only_default = all;
    only_default[0].1 = None;
    only_default[1].1 = None;
    run_env_child(dir.path(), "c", &only_default);
    let mut missing_file = all;
    missing_file[1].1 = Some(missing.as_os_str());
    run_env_child(dir.path(), "missing-file", &missing_file);
}

/// The child half of [`identities_follow_the_sops_environment_conventions`];
/// passes trivially when run on its own.
#[test]
#[ignore = "run by identities_follow_the_sops_environment_conventions"]
fn sops_env_child() {
    let (Some(dir), Some(expect)) = (
        std::env::var_os(CHILD_DIR),
        std::env::var(CHILD_EXPECT).ok(),
    ) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let found = Identities::from_sops_env();
    if expect == "missing-file" {
        let err = found.unwrap_err();
        assert!(matches!(err, SopsError::ReadIdentityFile { .. }), "{err}");
        assert!(err.to_string().contains("missing.txt"), "{err}");
        return;
    }
    let found = found.unwrap();
    let debug = format!("{found:?}");
    assert!(!debug.contains("AGE-SECRET-KEY"), "{debug}");
    assert!(debug.contains("keys.txt"), "{debug}");
    for name in ["a", "b", "c"] {
        let doc = std::fs::read_to_string(dir.join(format!("doc-{name}.json"))).unwrap();
        let opened = sops::decrypt(&doc, Format::Json, &found);
        assert_eq!(
            opened.is_ok(),
            expect.contains(name),
            "{name}: {opened:?} with {debug}"
        );
        if let Err(e) = opened {
            assert!(matches!(e, SopsError::NoMatchingIdentity { .. }), "{e}");
            assert!(e.to_string().contains("keys.txt"), "{e}");
        }
    }
    if expect == "abc" {
        assert_eq!(found.len(), 4, "{debug}");
        assert!(debug.contains("SOPS_AGE_KEY_FILE="), "{debug}");
    }
}
