//! Arbitrary strings and mutated valid documents never make the envelope panic,
//! and no error it returns quotes a secret.

use std::time::Instant;

use kubectl_vault::store::sops::{self, EncryptOptions, Format, Identities, FLUX_ENCRYPTED_REGEX};
use proptest::prelude::*;

use super::{credentials, manifest};

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
