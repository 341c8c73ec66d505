//! The SOPS envelope against the real `sops` 3.11 binary and `age-keygen`
//! (installed by `scripts/install-deps` into `.deps/bin`).
//!
//! Both directions: what `store::sops::encrypt` writes must open with
//! `sops -d`, and what `sops encrypt --age` writes must open with
//! `store::sops::decrypt`; every tampered document must be refused by both,
//! for the same reason.

mod env;
mod fuzz;
mod interop;
mod tamper;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use kubectl_vault::store::sops::{EncryptOptions, Format, Identities, Recipient};

pub(super) fn deps_bin(tool: &str) -> PathBuf {
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
pub(super) struct Key {
    pub(super) file: PathBuf,
    pub(super) text: String,
    pub(super) recipient: Recipient,
}

pub(super) fn keygen(dir: &Path, name: &str) -> Key {
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
pub(super) enum SopsKey<'a> {
    File(&'a Key),
    Env(&'a Key),
    None,
}

/// Runs the real sops with a clean key environment (no inherited keys, an
/// empty HOME/XDG dir), input from a file.
pub(super) fn sops(dir: &Path, key: SopsKey<'_>, args: &[&str], input: &str) -> Output {
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

pub(super) fn sops_decrypt(
    dir: &Path,
    key: SopsKey<'_>,
    doc: &str,
    format: Format,
) -> Result<String, Output> {
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

pub(super) fn sops_encrypt(
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

pub(super) fn type_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Yaml => "yaml",
    }
}

pub(super) fn ids(keys: &[&Key]) -> Identities {
    Identities::from_files(&keys.iter().map(|k| k.file.clone()).collect::<Vec<_>>()).unwrap()
}

pub(super) fn opts(keys: &[&Key], regex: Option<&str>) -> EncryptOptions {
    EncryptOptions {
        recipients: keys.iter().map(|k| k.recipient.clone()).collect(),
        encrypted_regex: regex.map(str::to_string),
    }
}

pub(super) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

pub(super) fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A credentials document with every awkward value the envelope must carry.
pub(super) fn credentials() -> String {
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
pub(super) fn manifest(string_data: bool) -> String {
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
