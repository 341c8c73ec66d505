//! Both directions against the real binary: ours opened by `sops -d`, theirs by ours.

use kubectl_vault::store::sops::{self, Format, Identities, FLUX_ENCRYPTED_REGEX};
use tempfile::TempDir;

use super::{
    credentials, ids, json, keygen, manifest, opts, sops_decrypt, sops_encrypt, yaml, SopsKey,
};

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
