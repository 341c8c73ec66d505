//! Tampered documents: each refused by ours with an error naming the reason,
//! and by sops with its exit code (51 MAC mismatch, 128 no key, 1 no version).

use std::path::Path;

use kubectl_vault::store::sops::{self, Format, SopsError, FLUX_ENCRYPTED_REGEX};
use tempfile::TempDir;

use super::{credentials, ids, json, keygen, manifest, opts, sops_decrypt, Key, SopsKey};

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
