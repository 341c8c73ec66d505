//! The envelope around a stored document: plaintext JSON, or a SOPS/age
//! encrypted JSON document exactly as `sops` writes it.
//!
//! Owns two decisions: which age recipients a write is encrypted for
//! ([`Sealing`]: explicit, inherited from what is stored, or plaintext), and
//! where the identities that open a document come from (`--age-identity`
//! files, the sops environment, a Flux-style identity Secret). Identities are
//! looked up once, lazily, the first time an encrypted document is read, so a
//! command that never meets one never needs a key. It leaves to others what
//! the document means (`ops`) and which object holds it (`kube_secret`).
//!
//! # Guarantees
//! - [`Envelope::open`] returns a plaintext document only after the SOPS MAC
//!   verified; a tampered document is [`StoreError::Corrupt`] naming the object
//!   and the reason, a document no identity opens is
//!   [`StoreError::Undecryptable`] naming the recipients it is for.
//! - No error carries a plaintext value or an identity.

use crate::ops::secret::SecretBytes;
use crate::ops::store::StoreError;
use crate::store::sops::{self, EncryptOptions, Format, Identities, Recipient, SopsError};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::Api;
use std::path::PathBuf;
use tokio::sync::OnceCell;

/// The annotation on the credentials (and checkpoint) Secret that records the
/// age recipients its documents are encrypted for, comma-separated. Later runs
/// without `--age-recipient` keep encrypting for them.
pub const RECIPIENTS_ANNOTATION: &str = "kubectl-vault.io/age-recipients";

/// The data-key suffix of an identity Secret, as Flux's sops decryption uses it.
pub const IDENTITY_KEY_SUFFIX: &str = ".agekey";

/// Which recipients new writes are encrypted for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Sealing {
    /// Keep what is stored: the recipients recorded on the credentials Secret
    /// (or on the checkpoint of an interrupted encrypted init); plaintext when none.
    #[default]
    Inherit,
    /// Encrypt for exactly these recipients (at least one).
    Encrypt(Vec<Recipient>),
    /// Like [`Sealing::Inherit`]; these recipients only for documents that
    /// are not encrypted yet (`SOPS_AGE_RECIPIENTS`: a default from the
    /// environment never re-encrypts what is stored for someone else).
    InheritOr(Vec<Recipient>),
    /// Write plaintext JSON and drop the recipients annotation.
    Plaintext,
}

/// Where identities are looked for, in addition to the sops environment
/// (`SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, `~/.config/sops/age/keys.txt`).
#[derive(Clone, Debug, Default)]
pub struct IdentitySources {
    /// `--age-identity FILE`, repeatable.
    pub files: Vec<PathBuf>,
    /// An identity Secret `(namespace, name)` whose data keys end in `.agekey`.
    pub secret: Option<(String, String)>,
}

/// How documents are sealed on write and opened on read.
pub struct Envelope {
    sealing: Sealing,
    /// The person asked for the recipients to change (`--yes`, or a command
    /// whose purpose is that change).
    recipients_change: bool,
    sources: IdentitySources,
    client: Option<kube::Client>,
    identities: OnceCell<Identities>,
}

impl Default for Envelope {
    /// Inherit on write; open with the sops environment only.
    fn default() -> Self {
        Envelope::new(Sealing::Inherit, IdentitySources::default(), None)
    }
}

/// A document as read from the store, opened.
pub struct Opened {
    pub plain: SecretBytes,
    /// The age recipients it was encrypted for; empty when it was plaintext.
    pub recipients: Vec<String>,
}

impl Envelope {
    /// `client` is needed only when `sources.secret` names an identity Secret.
    pub fn new(sealing: Sealing, sources: IdentitySources, client: Option<kube::Client>) -> Self {
        Envelope {
            sealing,
            recipients_change: false,
            sources,
            client,
            identities: OnceCell::new(),
        }
    }

    /// Allows a write to change the recipients of an encrypted document.
    #[must_use]
    pub fn allow_recipients_change(self, allowed: bool) -> Self {
        Envelope {
            recipients_change: allowed,
            ..self
        }
    }

    pub fn recipients_change_allowed(&self) -> bool {
        self.recipients_change
    }

    pub fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// The same identity sources with another write policy, chosen by a
    /// command whose purpose is that policy (encrypt, decrypt, import): it
    /// may change the recipients.
    pub fn with_sealing(self, sealing: Sealing) -> Self {
        Envelope {
            sealing,
            recipients_change: true,
            ..self
        }
    }

    /// Encrypts `plain` (a JSON document) for `recipients`; plaintext when there are none.
    pub fn seal(
        plain: &SecretBytes,
        recipients: &[Recipient],
        object: &str,
    ) -> Result<SecretBytes, StoreError> {
        if recipients.is_empty() {
            return Ok(plain.clone());
        }
        let text = std::str::from_utf8(plain.expose()).map_err(|_| StoreError::Corrupt {
            object: object.to_owned(),
            reason: "the document to store is not UTF-8".into(),
        })?;
        let opts = EncryptOptions {
            recipients: recipients.to_vec(),
            encrypted_regex: None,
        };
        sops::encrypt(text, Format::Json, &opts)
            .map(|doc| SecretBytes::new(doc.into_bytes()))
            .map_err(|e| StoreError::Corrupt {
                object: object.to_owned(),
                reason: format!("cannot encrypt it: {e}"),
            })
    }

    /// Opens a stored document: decrypts it when it is a SOPS document, passes
    /// plaintext JSON through.
    pub async fn open(
        &self,
        stored: &SecretBytes,
        object: &str,
        key: &str,
    ) -> Result<Opened, StoreError> {
        let Ok(text) = std::str::from_utf8(stored.expose()) else {
            return Err(StoreError::Corrupt {
                object: object.to_owned(),
                reason: format!("{key} is not UTF-8 text"),
            });
        };
        if !sops::is_encrypted(text, Format::Json) {
            return Ok(Opened {
                plain: stored.clone(),
                recipients: Vec::new(),
            });
        }
        let recipients = sops::recipients(text, Format::Json).unwrap_or_default();
        let identities = self.identities(object).await?;
        let plain = sops::decrypt(text, Format::Json, identities)
            .map_err(|e| open_error(e, object, key))?;
        Ok(Opened {
            plain: SecretBytes::new(zeroize::Zeroizing::new(plain).as_bytes().to_vec()),
            recipients,
        })
    }

    /// True when an identity available here opens documents for one of `recipients`.
    pub async fn holds_any(
        &self,
        recipients: &[Recipient],
        object: &str,
    ) -> Result<bool, StoreError> {
        let ids = self.identities(object).await?;
        let held = ids.recipients();
        Ok(recipients.iter().any(|r| held.contains(r)))
    }

    /// The identities, looked up on first use.
    pub async fn identities(&self, object: &str) -> Result<&Identities, StoreError> {
        self.identities
            .get_or_try_init(|| async { self.load_identities(object).await })
            .await
    }

    async fn load_identities(&self, object: &str) -> Result<Identities, StoreError> {
        let locked = |reason: String| StoreError::Undecryptable {
            object: object.to_owned(),
            reason,
        };
        let mut ids =
            Identities::from_files(&self.sources.files).map_err(|e| locked(e.to_string()))?;
        ids = ids.merge(Identities::from_sops_env().map_err(|e| locked(e.to_string()))?);
        if let Some((namespace, name)) = &self.sources.secret {
            let Some(client) = &self.client else {
                return Err(locked(format!(
                    "the identity Secret {namespace}/{name} cannot be read without a cluster connection"
                )));
            };
            ids = ids.merge(
                identity_secret(client.clone(), namespace, name)
                    .await
                    .map_err(locked)?,
            );
        }
        Ok(ids)
    }
}

/// Reads every `*.agekey` data key of Secret `namespace/name`.
async fn identity_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Identities, String> {
    let object = format!("Secret {namespace}/{name}");
    let api: Api<KubeSecret> = Api::namespaced(client, namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| format!("could not read the identity {object}: {e}"))?
        .ok_or_else(|| format!("the identity {object} does not exist"))?;
    let mut ids = Identities::default();
    let mut found = 0;
    for (key, value) in secret.data.iter().flatten() {
        if !key.ends_with(IDENTITY_KEY_SUFFIX) {
            continue;
        }
        found += 1;
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&value.0).into_owned());
        let source = format!("{object} key {key}");
        ids = ids.merge(
            Identities::from_key_text_with_source(&text, &source).map_err(|e| e.to_string())?,
        );
    }
    if found == 0 {
        return Err(format!(
            "the identity {object} has no data key ending in {IDENTITY_KEY_SUFFIX}"
        ));
    }
    Ok(ids)
}

/// Maps a decryption failure: no usable key is not corruption; everything else is.
fn open_error(e: SopsError, object: &str, key: &str) -> StoreError {
    match e {
        SopsError::NoMatchingIdentity { .. }
        | SopsError::ReadIdentityFile { .. }
        | SopsError::InvalidIdentity { .. } => StoreError::Undecryptable {
            object: object.to_owned(),
            reason: e.to_string(),
        },
        other => StoreError::Corrupt {
            object: object.to_owned(),
            reason: format!("{key} fails the SOPS integrity checks ({other}); refusing to use it"),
        },
    }
}

/// Parses the recipients annotation (`age1…,age1…`).
pub fn parse_recipients(value: &str) -> Result<Vec<Recipient>, SopsError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Recipient::parse)
        .collect()
}

/// The annotation value for `recipients`.
pub fn format_recipients(recipients: &[Recipient]) -> String {
    recipients
        .iter()
        .map(Recipient::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Identities, Recipient) {
        let id = age::x25519::Identity::generate();
        let recipient = Recipient::parse(&id.to_public().to_string()).unwrap();
        let secret = id.to_string();
        let text = age::secrecy::ExposeSecret::expose_secret(&secret).to_owned();
        (Identities::from_key_text(&text).unwrap(), recipient)
    }

    #[tokio::test]
    async fn a_sealed_document_opens_and_a_plain_one_passes_through() {
        let (ids, recipient) = key();
        let plain = SecretBytes::new(br#"{"root_token":"s.x","n":1}"#.to_vec());
        let sealed = Envelope::seal(&plain, std::slice::from_ref(&recipient), "obj").unwrap();
        assert!(!String::from_utf8_lossy(sealed.expose()).contains("s.x"));
        let env = Envelope::default();
        env.identities.set(ids).unwrap();
        let opened = env.open(&sealed, "obj", "k").await.unwrap();
        let json =
            |b: &SecretBytes| serde_json::from_slice::<serde_json::Value>(b.expose()).unwrap();
        assert_eq!(json(&opened.plain), json(&plain));
        assert_eq!(opened.recipients, vec![recipient.to_string()]);
        let passed = env.open(&plain, "obj", "k").await.unwrap();
        assert!(passed.recipients.is_empty());
    }

    #[tokio::test]
    async fn a_missing_identity_names_the_recipient_and_tampering_is_corrupt() {
        let (_, recipient) = key();
        let plain = SecretBytes::new(br#"{"a":"b"}"#.to_vec());
        let sealed = Envelope::seal(&plain, std::slice::from_ref(&recipient), "obj").unwrap();
        let env = Envelope::default();
        env.identities.set(Identities::default()).unwrap();
        let err = env.open(&sealed, "Secret ns/x", "k").await.err().unwrap();
        assert!(matches!(err, StoreError::Undecryptable { .. }), "{err}");
        assert!(err.to_string().contains(recipient.as_str()), "{err}");

        let (ids, recipient) = key();
        let sealed = Envelope::seal(&plain, &[recipient], "obj").unwrap();
        let text = String::from_utf8(sealed.expose().to_vec()).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["sops"]["mac"] =
            serde_json::Value::String("ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:str]".into());
        let env = Envelope::default();
        env.identities.set(ids).unwrap();
        let tampered = SecretBytes::new(serde_json::to_vec(&doc).unwrap());
        let err = env.open(&tampered, "Secret ns/x", "k").await.err().unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("Secret ns/x"), "{err}");
    }

    #[test]
    fn the_annotation_round_trips() {
        let (_, a) = key();
        let (_, b) = key();
        let text = format_recipients(&[a.clone(), b.clone()]);
        assert_eq!(parse_recipients(&text).unwrap(), vec![a, b]);
        assert!(parse_recipients("").unwrap().is_empty());
    }
}
