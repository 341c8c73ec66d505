//! Credentials outside the cluster: a Kubernetes Secret manifest for Git,
//! SOPS-encrypted the way Flux decrypts it, and reading such a file back.
//!
//! Owns the manifest layout (`stringData.credentials.json`, apiVersion, kind
//! and metadata in plaintext, `encrypted_regex: ^(data|stringData)$`) and
//! which inputs are accepted on the way in: that manifest, a `data:` variant
//! of it (as `kubectl get secret -o yaml` prints), or a bare credentials JSON
//! document (such as init's rescue copy), each SOPS-encrypted or not. Whether
//! the credentials belong to a cluster is decided in `ops::import`.

use crate::ops::credentials::Credentials;
use crate::ops::secret::SecretBytes;
use crate::store::kube_secret::CREDENTIALS_KEY;
use crate::store::sops::{
    self, EncryptOptions, Format, Identities, Recipient, SopsError, FLUX_ENCRYPTED_REGEX,
};
use base64::Engine as _;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file} does not decrypt: {source}")]
    Decrypt {
        file: String,
        #[source]
        source: SopsError,
    },
    #[error("cannot encrypt the manifest: {0}")]
    Encrypt(#[source] SopsError),
    #[error("{file} is not a Secret manifest or credentials document: {reason}")]
    Shape { file: String, reason: String },
}

/// A credentials document read from a file.
pub struct Imported {
    pub credentials: Credentials,
    /// The age recipients the file was encrypted for; empty when it was plaintext.
    pub recipients: Vec<Recipient>,
}

/// The Secret manifest for `credentials`, SOPS-encrypted for `recipients`
/// (plaintext YAML when there are none).
pub fn export(
    credentials: &Credentials,
    name: &str,
    namespace: &str,
    recipients: &[Recipient],
) -> Result<Zeroizing<String>, ManifestError> {
    let json = SecretBytes::json(credentials).map_err(|e| ManifestError::Shape {
        file: "the credentials".into(),
        reason: e.to_string(),
    })?;
    let json = Zeroizing::new(String::from_utf8_lossy(json.expose()).into_owned());
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": "kubectl-vault" },
        },
        "type": "Opaque",
        "stringData": { CREDENTIALS_KEY: json.as_str() },
    });
    let manifest = Scrub(manifest);
    let plain =
        Zeroizing::new(
            serde_yaml::to_string(&manifest.0).map_err(|e| ManifestError::Shape {
                file: "the manifest".into(),
                reason: e.to_string(),
            })?,
        );
    if recipients.is_empty() {
        return Ok(plain);
    }
    let opts = EncryptOptions {
        recipients: recipients.to_vec(),
        encrypted_regex: Some(FLUX_ENCRYPTED_REGEX.to_owned()),
    };
    sops::encrypt(&plain, Format::Yaml, &opts)
        .map(Zeroizing::new)
        .map_err(ManifestError::Encrypt)
}

/// Reads a Secret manifest or credentials document from `text`, decrypting it
/// with `ids` when it is a SOPS document. `file` names it in errors.
pub fn import(text: &str, file: &str, ids: &Identities) -> Result<Imported, ManifestError> {
    let shape = |reason: String| ManifestError::Shape {
        file: file.to_owned(),
        reason,
    };
    let format = if sops::is_encrypted(text, Format::Json) {
        Some(Format::Json)
    } else if sops::is_encrypted(text, Format::Yaml) {
        Some(Format::Yaml)
    } else {
        None
    };
    let (plain, recipients) = match format {
        Some(format) => {
            let decrypt = |source| ManifestError::Decrypt {
                file: file.to_owned(),
                source,
            };
            let recipients = sops::recipients(text, format)
                .map_err(decrypt)?
                .iter()
                .map(|r| Recipient::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(decrypt)?;
            let plain = Zeroizing::new(sops::decrypt(text, format, ids).map_err(decrypt)?);
            (plain, recipients)
        }
        None => (Zeroizing::new(text.to_owned()), Vec::new()),
    };
    // JSON is YAML; serde_yaml errors are reduced to their position, as the
    // text around them could be a secret.
    let value: serde_yaml::Value = serde_yaml::from_str(&plain).map_err(|e| {
        shape(match e.location() {
            Some(l) => format!(
                "invalid YAML/JSON at line {} column {}",
                l.line(),
                l.column()
            ),
            None => "invalid YAML/JSON".into(),
        })
    })?;
    let mut value = ScrubYaml(value);
    let document = match value.0.get("kind").and_then(serde_yaml::Value::as_str) {
        Some("Secret") => secret_document(&value.0).map_err(shape)?,
        Some(other) => return Err(shape(format!("it is a {other}, not a Secret"))),
        None => Zeroizing::new(plain.to_string()),
    };
    let credentials: Credentials = serde_yaml::from_str(&document).map_err(|e| {
        shape(format!(
            "{CREDENTIALS_KEY} does not hold a credentials document (wrong fields or types{})",
            e.location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default()
        ))
    })?;
    value.0 = serde_yaml::Value::Null;
    Ok(Imported {
        credentials,
        recipients,
    })
}

/// `stringData.credentials.json`, or the base64 `data.credentials.json`.
fn secret_document(secret: &serde_yaml::Value) -> Result<Zeroizing<String>, String> {
    if let Some(text) = secret
        .get("stringData")
        .and_then(|d| d.get(CREDENTIALS_KEY))
        .and_then(serde_yaml::Value::as_str)
    {
        return Ok(Zeroizing::new(text.to_owned()));
    }
    let encoded = secret
        .get("data")
        .and_then(|d| d.get(CREDENTIALS_KEY))
        .and_then(serde_yaml::Value::as_str)
        .ok_or_else(|| format!("the Secret has no stringData or data key {CREDENTIALS_KEY}"))?;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| format!("data.{CREDENTIALS_KEY} is not base64"))?,
    );
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| format!("data.{CREDENTIALS_KEY} is not UTF-8"))
}

/// A JSON tree that is dropped without leaving its strings behind.
struct Scrub(serde_json::Value);

impl Drop for Scrub {
    fn drop(&mut self) {
        fn scrub(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
                serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
                serde_json::Value::Object(m) => m.values_mut().for_each(scrub),
                _ => {}
            }
        }
        scrub(&mut self.0);
    }
}

/// A YAML tree whose strings are overwritten when dropped.
struct ScrubYaml(serde_yaml::Value);

impl Drop for ScrubYaml {
    fn drop(&mut self) {
        fn scrub(v: &mut serde_yaml::Value) {
            match v {
                serde_yaml::Value::String(s) => zeroize::Zeroize::zeroize(s),
                serde_yaml::Value::Sequence(a) => a.iter_mut().for_each(scrub),
                serde_yaml::Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| scrub(v)),
                serde_yaml::Value::Tagged(t) => scrub(&mut t.value),
                _ => {}
            }
        }
        scrub(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::credentials::sample;

    fn key() -> (Identities, Recipient) {
        let id = age::x25519::Identity::generate();
        let recipient = Recipient::parse(&id.to_public().to_string()).unwrap();
        let secret = id.to_string();
        let text = age::secrecy::ExposeSecret::expose_secret(&secret).to_owned();
        (Identities::from_key_text(&text).unwrap(), recipient)
    }

    #[test]
    fn an_exported_manifest_imports_and_keeps_metadata_plain() {
        let (ids, recipient) = key();
        let c = sample(3, 2);
        let text = export(
            &c,
            "openbao-unseal",
            "vault",
            std::slice::from_ref(&recipient),
        )
        .unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(yaml["kind"], "Secret");
        assert_eq!(yaml["metadata"]["name"], "openbao-unseal");
        assert_eq!(yaml["sops"]["encrypted_regex"], FLUX_ENCRYPTED_REGEX);
        assert!(!text.contains("share-1") && !text.contains("s.root"));
        let back = import(&text, "f.yaml", &ids).unwrap();
        assert!(back.credentials.same_secrets(&c));
        assert_eq!(back.recipients, vec![recipient]);
    }

    #[test]
    fn plaintext_manifests_and_bare_documents_import() {
        let c = sample(2, 1);
        let text = export(&c, "x", "ns", &[]).unwrap();
        let back = import(&text, "f", &Identities::default()).unwrap();
        assert!(back.credentials.same_secrets(&c) && back.recipients.is_empty());
        let json = serde_json::to_string(&c).unwrap();
        let back = import(&json, "f", &Identities::default()).unwrap();
        assert!(back.credentials.same_secrets(&c));
        let mut data_form: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&json);
        data_form["data"] = serde_json::json!({ CREDENTIALS_KEY: encoded });
        data_form.as_object_mut().unwrap().remove("stringData");
        let back = import(
            &serde_yaml::to_string(&data_form).unwrap(),
            "f",
            &Identities::default(),
        )
        .unwrap();
        assert!(back.credentials.same_secrets(&c));
    }

    #[test]
    fn errors_never_quote_a_secret() {
        let text = "kind: Secret\nstringData:\n  credentials.json: '{\"root_token\": 5, \"unseal_keys_b64\": [\"topsecret\"]}'\n";
        let err = import(text, "f", &Identities::default())
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("topsecret"), "{err}");
        assert!(err.contains("f is not"), "{err}");
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use crate::ops::credentials::sample;

    #[test]
    fn the_plaintext_manifest_layout() {
        let text = export(&sample(2, 1), "openbao-unseal", "vault", &[]).unwrap();
        insta::assert_snapshot!("plaintext-manifest", text.as_str());
    }
}
