//! Unit tests against documents the real sops 3.11 wrote (see `testdata/README.md`).

use super::*;

const IDENTITY: &str = include_str!("testdata/test-identity.agekey");

fn ids() -> Identities {
    Identities::from_key_text(IDENTITY).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn opens_a_value_sops_wrote_with_its_data_key() {
    // From testdata/sops-3.11-mixed.enc.json, data key unwrapped with `age -d`.
    let key = DataKey::from_slice(
        &(0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"ac707ae2f0bca7caaca65b2c31f2246b67861f2dd9ea57428847d0cc8da6bf58"
                        [2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let s = Sealed::parse("ENC[AES256_GCM,data:84Y=,iv:C0ogCJsxOur14UBw3PQn0CytHl9HmsRtv0lILP28AwQ=,tag:ZB4HTBz9MWuYCyGJ/O5Oew==,type:str]").unwrap();
    assert_eq!(s.open(&key, b"s:").unwrap().as_slice(), b"hi");
    assert!(
        s.open(&key, b"t:").is_err(),
        "the key path is authenticated"
    );
    let b = Sealed::parse("ENC[AES256_GCM,data:0ki6MA==,iv:NfrhO7yMANyAlRyMQnwwm10RfwV5lrPoU/4l1qagz2g=,tag:SlpJIEaSnkIHYUEh7BhKwg==,type:bool]").unwrap();
    assert_eq!(b.kind, ValueType::Bool);
    assert_eq!(b.open(&key, b"b:").unwrap().as_slice(), b"True");
}

#[test]
fn decrypts_sops_json_with_every_json_type_and_verifies_its_mac() {
    // Floats, integers written as floats, a number above 2^64, booleans (hashed
    // as True/False), null (skipped), "" (left plain), nested lists, and an
    // `_unencrypted` key: the MAC only matches if every rule is right.
    let doc = include_str!("testdata/sops-3.11-mixed.enc.json");
    let plain = decrypt(doc, Format::Json, &ids()).unwrap();
    let mut want = json(include_str!("testdata/sops-3.11-mixed.plain.json"));
    want["big"] = serde_json::json!(18446744073709551615.0f64);
    want["f1"] = serde_json::json!(1); // sops, too, prints 1.0 as 1
    assert_eq!(json(&plain), want);
    let keys: Vec<String> = json(&plain).as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["s", "e", "n", "i", "f", "f1", "big", "b", "l", "m"]);
}

#[test]
fn decrypts_sops_yaml_with_timestamps_comments_and_typed_scalars() {
    let doc = include_str!("testdata/sops-3.11-mixed.enc.yaml");
    let plain = decrypt(doc, Format::Yaml, &ids()).unwrap();
    let got = yaml(&plain);
    assert_eq!(got["a"], yaml("2001-12-14T00:00:00Z"));
    assert_eq!(got["t"], yaml("2001-12-14T21:59:43.1-05:00"));
    assert_eq!(got["b"], yaml("x"));
    assert_eq!(got["c"], yaml("[1, 2.0, \"yes\", true, 1000.0, -0.5]"));
    assert_eq!(got["d"], yaml("[{k: v, n: null}, [x, \"\"]]"));
}

#[test]
fn decrypts_a_sops_flux_manifest_with_plain_timestamps() {
    let doc = include_str!("testdata/sops-3.11-manifest.enc.yaml");
    let plain = decrypt(doc, Format::Yaml, &ids()).unwrap();
    let got = yaml(&plain);
    assert_eq!(got["data"]["a"], yaml("\"2001-12-14\""));
    assert_eq!(got["data"]["e"], yaml("\"\""));
    assert_eq!(got["metadata"]["name"], yaml("x"));
    assert!(
        plain.starts_with("apiVersion: \"v1\"\nkind: \"Secret\"\n"),
        "{plain}"
    );
}

#[test]
fn round_trip_keeps_order_types_and_odd_strings() {
    let recipient = ids().recipients().remove(0);
    let opts = EncryptOptions {
        recipients: vec![recipient],
        encrypted_regex: None,
    };
    let plain = r#"{"z":"\"q\" ü 🦀","a":["2001-12-14","",null,3,2.5,true],"k_unencrypted":{"x":"open"},"m":{}}"#;
    let doc = encrypt(plain, Format::Json, &opts).unwrap();
    assert!(!doc.contains("2001-12-14") && !doc.contains("🦀"));
    assert!(doc.contains("\"open\""), "the suffix keeps a value plain");
    assert!(is_encrypted(&doc, Format::Json));
    assert!(!is_encrypted(plain, Format::Json));
    assert_eq!(
        decrypt(&doc, Format::Json, &ids())
            .map(|p| json(&p))
            .unwrap(),
        json(plain)
    );
    let as_yaml = "b: 1\na: [\"2001-12-14\", {c: no}]\n";
    let doc = encrypt(as_yaml, Format::Yaml, &opts).unwrap();
    assert_eq!(
        yaml(&decrypt(&doc, Format::Yaml, &ids()).unwrap()),
        yaml(as_yaml)
    );
}

#[test]
fn the_sops_key_is_reserved() {
    let opts = EncryptOptions {
        recipients: ids().recipients(),
        encrypted_regex: None,
    };
    assert!(matches!(
        encrypt(r#"{"sops":1}"#, Format::Json, &opts),
        Err(SopsError::ReservedKey)
    ));
    assert!(matches!(
        encrypt("{}", Format::Json, &EncryptOptions::default()),
        Err(SopsError::NoRecipients)
    ));
}

#[test]
fn an_edited_value_is_named_by_path_and_its_value_never_shown() {
    let opts = EncryptOptions {
        recipients: ids().recipients(),
        encrypted_regex: None,
    };
    let doc = encrypt(r#"{"keys":["s3cr3t-a","s3cr3t-b"]}"#, Format::Json, &opts).unwrap();
    let mut tree = json(&doc);
    tree["keys"][1] = serde_json::json!("s3cr3t-plain");
    let err = decrypt(&tree.to_string(), Format::Json, &ids()).unwrap_err();
    assert!(matches!(err, SopsError::ValueNotEncrypted { .. }), "{err}");
    assert!(err.to_string().contains("keys[1]") && !err.to_string().contains("s3cr3t"));
    // A value moved to another key fails its additional data.
    let mut tree = json(&doc);
    let first = tree["keys"][0].clone();
    tree["other"] = first;
    let err = decrypt(&tree.to_string(), Format::Json, &ids()).unwrap_err();
    assert!(
        matches!(&err, SopsError::DecryptValue { path } if path == "other"),
        "{err}"
    );
}

#[test]
fn recipients_lists_the_age_stanzas() {
    let doc = include_str!("testdata/sops-3.11-mixed.enc.json");
    assert_eq!(
        recipients(doc, Format::Json).unwrap(),
        ["age1sxl2v95v3srpe7mzn3u2p6nuc3c4c558qmctxkaedzv8dr8ahy2spv23es"]
    );
    assert!(matches!(
        recipients("{}", Format::Json),
        Err(SopsError::NotSopsDocument)
    ));
}
