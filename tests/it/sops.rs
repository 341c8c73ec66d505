//! The SOPS envelope against the real `sops` 3.11 binary and `age-keygen`
//! (installed by `scripts/install-deps` into `.deps/bin`).
//!
//! Both directions: what `store::sops::encrypt` writes must open with
//! `sops -d`, and what `sops encrypt --age` writes must open with
//! `store::sops::decrypt`; every tampered document must be refused by both,
//! for the same reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use base64::Engine as _;
use kubectl_vault::store::sops::{
    self, EncryptOptions, Format, Identities, Recipient, SopsError, FLUX_ENCRYPTED_REGEX,
};
use proptest::prelude::*;
use tempfile::TempDir;

fn deps_bin(tool: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".deps/bin")
        .join(tool);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps",
        path.display()
    );
    path
}

/// A throwaway age identity made by the real `age-keygen`.
struct Key {
    file: PathBuf,
    text: String,
    recipient: Recipient,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let file = dir.join(format!("{name}.txt"));
    let out = Command::new(deps_bin("age-keygen"))
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen: {out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap();
    Key {
        recipient: Recipient::parse(public).unwrap(),
        file,
        text,
    }
}

/// How `sops` finds its key in one run.
enum SopsKey<'a> {
    File(&'a Key),
    Env(&'a Key),
    None,
}

/// Runs the real sops with a clean key environment (no inherited keys, an
/// empty HOME/XDG dir), input from a file.
fn sops(dir: &Path, key: SopsKey<'_>, args: &[&str], input: &str) -> Output {
    let file = dir.join("input");
    std::fs::write(&file, input).unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(deps_bin("sops"));
    cmd.args(args)
        .arg(&file)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY_CMD")
        .env_remove("SOPS_AGE_RECIPIENTS");
    match key {
        SopsKey::File(k) => cmd.env("SOPS_AGE_KEY_FILE", &k.file),
        SopsKey::Env(k) => cmd.env("SOPS_AGE_KEY", &k.text),
        SopsKey::None => &mut cmd,
    };
    cmd.output().unwrap()
}

fn sops_decrypt(dir: &Path, key: SopsKey<'_>, doc: &str, format: Format) -> Result<String, Output> {
    let t = type_name(format);
    let out = sops(
        dir,
        key,
        &["-d", "--input-type", t, "--output-type", t],
        doc,
    );
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(out)
    }
}

fn sops_encrypt(
    dir: &Path,
    recipients: &[&Key],
    extra: &[&str],
    plain: &str,
    format: Format,
) -> String {
    let t = type_name(format);
    let list = recipients
        .iter()
        .map(|k| k.recipient.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        "encrypt",
        "--age",
        &list,
        "--input-type",
        t,
        "--output-type",
        t,
    ];
    args.extend_from_slice(extra);
    let out = sops(dir, SopsKey::None, &args, plain);
    assert!(
        out.status.success(),
        "sops encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn type_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Yaml => "yaml",
    }
}

fn ids(keys: &[&Key]) -> Identities {
    Identities::from_files(&keys.iter().map(|k| k.file.clone()).collect::<Vec<_>>()).unwrap()
}

fn opts(keys: &[&Key], regex: Option<&str>) -> EncryptOptions {
    EncryptOptions {
        recipients: keys.iter().map(|k| k.recipient.clone()).collect(),
        encrypted_regex: regex.map(str::to_string),
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A credentials document with every awkward value the envelope must carry.
fn credentials() -> String {
    serde_json::json!({
        "root_token": "hvs.CAESIJ\"quoted\"\\back",
        "unseal_keys_b64": ["a2V5LW9uZQ==", "a2V5LXR3bw==", "a2V5LXRocmVl", "a2V5LWZvdXI=", "a2V5LWZpdmU="],
        "key_threshold": 3,
        "key_shares": 5,
        "generation": 1,
        "cluster_id": "ünïcödé-🦀-クラスタ",
        "created_at": "2001-12-14",
        "server_version": "2.7.2",
        "note": "",
        "nested": [["x", "2001-12-14T21:59:43.10-05:00"], [{"deep": "no"}], []],
        "nothing": null
    })
    .to_string()
}

/// A Flux-style Secret manifest; `metadata` stays plain, so its date-like
/// and boolean-like strings must be quoted for sops to hash them as strings.
fn manifest(string_data: bool) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(credentials());
    let body = if string_data {
        format!(
            "stringData:\n  credentials.json: {:?}\n  created: \"2001-12-14\"\n",
            credentials()
        )
    } else {
        format!("data:\n  credentials.json: {creds}\n")
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-credentials\n  namespace: vault\n  annotations:\n    kubectl-vault/created: \"2001-12-14\"\n    kubectl-vault/flag: \"no\"\n    kubectl-vault/empty: \"\"\ntype: Opaque\n{body}"
    )
}

#[test]
fn our_json_opens_with_sops_for_one_and_two_recipients_by_key_file_and_env() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
    let plain = credentials();
    let one = sops::encrypt(&plain, Format::Json, &opts(&[&a], None)).unwrap();
    let two = sops::encrypt(&plain, Format::Json, &opts(&[&a, &b], None)).unwrap();
    assert_eq!(
        sops::recipients(&two, Format::Json).unwrap(),
        [a.recipient.to_string(), b.recipient.to_string()]
    );
    for (doc, key) in [
        (&one, SopsKey::File(&a)),
        (&one, SopsKey::Env(&a)),
        (&two, SopsKey::File(&a)),
        (&two, SopsKey::Env(&b)),
    ] {
        let out = sops_decrypt(dir.path(), key, doc, Format::Json)
            .unwrap_or_else(|o| panic!("sops -d failed: {}", String::from_utf8_lossy(&o.stderr)));
        assert_eq!(json(&out), json(&plain));
    }
    // Only the recipients can: sops with an unrelated key exits 128.
    let c = keygen(dir.path(), "c");
    let err = sops_decrypt(dir.path(), SopsKey::File(&c), &one, Format::Json).unwrap_err();
    assert_eq!(err.status.code(), Some(128));
}

#[test]
fn our_flux_manifests_open_with_sops_and_keep_metadata_plain() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
    for string_data in [false, true] {
        let plain = manifest(string_data);
        for keys in [vec![&a], vec![&a, &b]] {
            let doc = sops::encrypt(
                &plain,
                Format::Yaml,
                &opts(&keys, Some(FLUX_ENCRYPTED_REGEX)),
            )
            .unwrap();
            let tree = yaml(&doc);
            assert_eq!(
                tree["metadata"]["annotations"]["kubectl-vault/created"],
                yaml("\"2001-12-14\"")
            );
            assert_eq!(tree["kind"], yaml("Secret"));
            assert_eq!(
                tree["sops"]["encrypted_regex"],
                yaml("'^(data|stringData)$'")
            );
            let section = if string_data { "stringData" } else { "data" };
            let sealed = tree[section]["credentials.json"].as_str().unwrap();
            assert!(sealed.starts_with("ENC[AES256_GCM,data:"), "{sealed}");
            for key in [SopsKey::File(keys[keys.len() - 1]), SopsKey::Env(&a)] {
                let out = sops_decrypt(dir.path(), key, &doc, Format::Yaml).unwrap_or_else(|o| {
                    panic!("sops -d failed: {}", String::from_utf8_lossy(&o.stderr))
                });
                assert_eq!(yaml(&out), yaml(&plain));
            }
        }
    }
}

#[test]
fn sops_written_json_opens_with_ours_equal_to_the_plaintext() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
    let plain = credentials();
    let doc = sops_encrypt(dir.path(), &[&a, &b], &[], &plain, Format::Json);
    assert!(sops::is_encrypted(&doc, Format::Json));
    for key in [&a, &b] {
        let out = sops::decrypt(&doc, Format::Json, &ids(&[key])).unwrap();
        assert_eq!(json(&out), json(&plain));
        // Same key order as the plaintext.
        let order =
            |v: serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(order(json(&out)), order(json(&plain)));
    }
    // Key text as a Flux `*.agekey` Secret value holds it.
    let out = sops::decrypt(
        &doc,
        Format::Json,
        &Identities::from_key_text(&b.text).unwrap(),
    )
    .unwrap();
    assert_eq!(json(&out), json(&plain));
}

#[test]
fn sops_written_manifests_open_with_ours_like_sops_opens_them() {
    let dir = TempDir::new().unwrap();
    let a = keygen(dir.path(), "a");
    for string_data in [false, true] {
        // An unquoted date in the plain part: sops reads a timestamp and
        // hashes it as one; ours must agree with `sops -d`.
        let plain = manifest(string_data).replace(
            "namespace: vault\n",
            "namespace: vault\n  labels:\n    day: 2001-12-14\n",
        );
        let doc = sops_encrypt(
            dir.path(),
            &[&a],
            &["--encrypted-regex", FLUX_ENCRYPTED_REGEX],
            &plain,
            Format::Yaml,
        );
        let ours = sops::decrypt(&doc, Format::Yaml, &ids(&[&a])).unwrap();
        let theirs = sops_decrypt(dir.path(), SopsKey::File(&a), &doc, Format::Yaml).unwrap();
        assert_eq!(yaml(&ours), yaml(&theirs));
        let mut want = yaml(&plain);
        want["metadata"]["labels"]["day"] = yaml("2001-12-14T00:00:00Z");
        assert_eq!(yaml(&ours), want);
    }
}

/// Set on the child runs of [`sops_env_child`]: the directory holding the
/// documents and what the child should expect.
const CHILD_DIR: &str = "KUBECTL_VAULT_TEST_SOPS_ENV_DIR";
const CHILD_EXPECT: &str = "KUBECTL_VAULT_TEST_SOPS_ENV_EXPECT";

/// Runs [`sops_env_child`] in a fresh process of this test binary with `env`,
/// so no test changes the environment of this process.
fn run_env_child(dir: &Path, expect: &str, env: &[(&str, Option<&std::ffi::OsStr>)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "sops::sops_env_child",
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

/// A tampered document, refused by ours with `want` and by sops with `code`.
fn assert_refused(
    dir: &Path,
    key: &Key,
    doc: &str,
    format: Format,
    want: impl Fn(&SopsError) -> bool,
    code: i32,
) {
    let err = sops::decrypt(doc, format, &ids(&[key])).unwrap_err();
    assert!(want(&err), "unexpected error: {err}");
    let msg = err.to_string();
    for secret in [
        "hvs.CAES",
        "a2V5",
        "AGE-SECRET-KEY",
        "vault-credentials-secret",
    ] {
        assert!(!msg.contains(secret), "error leaks `{secret}`: {msg}");
    }
    let out = sops_decrypt(dir, SopsKey::File(key), doc, format).unwrap_err();
    assert_eq!(
        out.status.code(),
        Some(code),
        "sops: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn swapped_list_items_are_refused_by_both_as_mac_mismatch() {
    let dir = TempDir::new().unwrap();
    let a = keygen(dir.path(), "a");
    let doc = sops::encrypt(&credentials(), Format::Json, &opts(&[&a], None)).unwrap();
    let mut tree = json(&doc);
    tree["unseal_keys_b64"].as_array_mut().unwrap().swap(0, 1);
    let err = sops::decrypt(&tree.to_string(), Format::Json, &ids(&[&a])).unwrap_err();
    assert_eq!(err.to_string(), "the document was modified: MAC mismatch");
    assert_refused(
        dir.path(),
        &a,
        &tree.to_string(),
        Format::Json,
        |e| matches!(e, SopsError::MacMismatch),
        51,
    );
}

#[test]
fn an_edited_plain_field_is_refused_by_both_as_mac_mismatch() {
    let dir = TempDir::new().unwrap();
    let a = keygen(dir.path(), "a");
    let doc = sops::encrypt(
        &manifest(false),
        Format::Yaml,
        &opts(&[&a], Some(FLUX_ENCRYPTED_REGEX)),
    )
    .unwrap();
    let edited = doc.replace(
        "name: \"vault-credentials\"",
        "name: \"vault-credentials-secret\"",
    );
    assert_ne!(edited, doc);
    assert_refused(
        dir.path(),
        &a,
        &edited,
        Format::Yaml,
        |e| matches!(e, SopsError::MacMismatch),
        51,
    );
    // Also in a JSON document, under the `_unencrypted` suffix.
    let doc = sops::encrypt(
        r#"{"k":"v","note_unencrypted":"plain"}"#,
        Format::Json,
        &opts(&[&a], None),
    )
    .unwrap();
    assert!(doc.contains("\"plain\""));
    let edited = doc.replace("\"plain\"", "\"edited\"");
    assert_refused(
        dir.path(),
        &a,
        &edited,
        Format::Json,
        |e| matches!(e, SopsError::MacMismatch),
        51,
    );
}

#[test]
fn a_changed_mac_is_refused_by_both() {
    let dir = TempDir::new().unwrap();
    let a = keygen(dir.path(), "a");
    let doc = sops::encrypt(&credentials(), Format::Json, &opts(&[&a], None)).unwrap();
    let other = sops::encrypt(&credentials(), Format::Json, &opts(&[&a], None)).unwrap();
    // The MAC of another document (another data key) in place of this one's.
    let mut tree = json(&doc);
    tree["sops"]["mac"] = json(&other)["sops"]["mac"].clone();
    assert_refused(
        dir.path(),
        &a,
        &tree.to_string(),
        Format::Json,
        |e| {
            matches!(e, SopsError::MacUnreadable)
                && e.to_string().starts_with("the document was modified")
        },
        51,
    );
    // A changed lastmodified un-binds the MAC the same way.
    let mut tree = json(&doc);
    tree["sops"]["lastmodified"] = json("\"2001-12-14T00:00:00Z\"");
    assert_refused(
        dir.path(),
        &a,
        &tree.to_string(),
        Format::Json,
        |e| matches!(e, SopsError::MacUnreadable),
        51,
    );
}

#[test]
fn a_removed_version_is_refused_by_both() {
    let dir = TempDir::new().unwrap();
    let a = keygen(dir.path(), "a");
    let doc = sops::encrypt(&credentials(), Format::Json, &opts(&[&a], None)).unwrap();
    let mut tree = json(&doc);
    tree["sops"].as_object_mut().unwrap().remove("version");
    // sops says "Version string empty" and exits 1.
    assert_refused(
        dir.path(),
        &a,
        &tree.to_string(),
        Format::Json,
        |e| matches!(e, SopsError::MissingVersion),
        1,
    );
}

#[test]
fn the_wrong_identity_is_refused_naming_recipients_and_places() {
    let dir = TempDir::new().unwrap();
    let (a, b, wrong) = (
        keygen(dir.path(), "a"),
        keygen(dir.path(), "b"),
        keygen(dir.path(), "wrong"),
    );
    let doc = sops::encrypt(&credentials(), Format::Json, &opts(&[&a, &b], None)).unwrap();
    assert_refused(
        dir.path(),
        &wrong,
        &doc,
        Format::Json,
        |e| matches!(e, SopsError::NoMatchingIdentity { .. }),
        128,
    );
    let msg = sops::decrypt(&doc, Format::Json, &ids(&[&wrong]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&a.recipient.to_string()) && msg.contains(&b.recipient.to_string()),
        "{msg}"
    );
    assert!(msg.contains(&wrong.file.display().to_string()), "{msg}");
}

#[test]
fn a_truncated_age_stanza_is_refused_by_both() {
    let dir = TempDir::new().unwrap();
    let a = keygen(dir.path(), "a");
    let doc = sops::encrypt(&credentials(), Format::Json, &opts(&[&a], None)).unwrap();
    let mut tree = json(&doc);
    let enc = tree["sops"]["age"][0]["enc"].as_str().unwrap().to_string();
    tree["sops"]["age"][0]["enc"] = serde_json::Value::String(enc[..enc.len() / 2].to_string());
    assert_refused(
        dir.path(),
        &a,
        &tree.to_string(),
        Format::Json,
        |e| matches!(e, SopsError::MalformedAgeStanza { recipient, .. } if *recipient == a.recipient.to_string()),
        128,
    );
}

#[test]
fn a_malformed_value_is_named_by_its_path() {
    let dir = TempDir::new().unwrap();
    let a = keygen(dir.path(), "a");
    let doc = sops::encrypt(&credentials(), Format::Json, &opts(&[&a], None)).unwrap();
    let mut tree = json(&doc);
    let v = tree["unseal_keys_b64"][2]
        .as_str()
        .unwrap()
        .replace(",tag:", ",tog:");
    tree["unseal_keys_b64"][2] = serde_json::Value::String(v);
    let err = sops::decrypt(&tree.to_string(), Format::Json, &ids(&[&a])).unwrap_err();
    assert!(
        matches!(&err, SopsError::MalformedValue { path, .. } if path == "unseal_keys_b64[2]"),
        "{err}"
    );
    assert!(!sops::is_encrypted(&credentials(), Format::Json));
    assert!(matches!(
        sops::decrypt(&credentials(), Format::Json, &ids(&[&a])),
        Err(SopsError::NotSopsDocument)
    ));
}

/// Documents to mutate in the fuzz test: one JSON, one YAML manifest.
fn seeds() -> (Identities, String, String) {
    let ids = Identities::from_key_text(
        "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33",
    )
    .unwrap();
    let o = EncryptOptions {
        recipients: ids.recipients(),
        encrypted_regex: None,
    };
    let json_doc = sops::encrypt(&credentials(), Format::Json, &o).unwrap();
    let o = EncryptOptions {
        encrypted_regex: Some(FLUX_ENCRYPTED_REGEX.into()),
        ..o
    };
    let yaml_doc = sops::encrypt(&manifest(true), Format::Yaml, &o).unwrap();
    (ids, json_doc, yaml_doc)
}

fn exercise(text: &str, ids: &Identities) {
    for format in [Format::Json, Format::Yaml] {
        let _ = sops::is_encrypted(text, format);
        let _ = sops::recipients(text, format);
        if let Err(e) = sops::decrypt(text, format, ids) {
            let msg = e.to_string();
            assert!(!msg.contains("hvs.CAES") && !msg.contains("a2V5"), "{msg}");
        }
    }
}

const FUZZ_CASES: u32 = 3000;

#[test]
fn arbitrary_and_mutated_documents_never_panic() {
    let (ids, json_doc, yaml_doc) = seeds();
    let started = Instant::now();
    let config = ProptestConfig {
        cases: FUZZ_CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config.clone());
    runner
        .run(&any::<String>(), |text| {
            exercise(&text, &ids);
            Ok(())
        })
        .unwrap();
    let docs = [json_doc, yaml_doc];
    let mutation = (
        0..2usize,
        any::<prop::sample::Index>(),
        0..16usize,
        "\\PC{0,3}",
        0..3u8,
    );
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&mutation, |(which, at, len, insert, op)| {
            let doc = &docs[which];
            let start = at.index(doc.len());
            let start = (0..=start)
                .rev()
                .find(|i| doc.is_char_boundary(*i))
                .unwrap_or(0);
            let end = (start + len..=doc.len())
                .find(|i| doc.is_char_boundary(*i))
                .unwrap_or(doc.len());
            let mutated = match op {
                0 => format!("{}{}", &doc[..start], &doc[end..]),
                1 => format!("{}{}{}", &doc[..start], insert, &doc[start..]),
                _ => format!("{}{}{}", &doc[..start], insert, &doc[end..]),
            };
            exercise(&mutated, &ids);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "sops fuzz: {} arbitrary strings and {} mutated documents in {:.1?}",
        FUZZ_CASES,
        FUZZ_CASES,
        started.elapsed()
    );
}
