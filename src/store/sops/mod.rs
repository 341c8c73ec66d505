//! SOPS/age envelope: credentials documents and Secret manifests as real sops 3.x files.
//!
//! This module decides the on-disk envelope: a JSON or YAML document whose
//! values are encrypted one by one with a random 32-byte data key
//! (`ENC[AES256_GCM,...]`), the data key wrapped for each age recipient, and a
//! SHA-512 MAC over all values, exactly as `sops` 3.x writes them, so that
//! `sops -d` opens what [`encrypt`] writes and [`decrypt`] opens what
//! `sops encrypt --age` writes. It leaves to others where the document is kept
//! (a file, a Kubernetes Secret, Git), what it holds, and where recipients come from.
//!
//! Supported: age X25519 recipients and identities; the selection options
//! `unencrypted_suffix` (default `_unencrypted`), `encrypted_regex`, and on
//! reading also `encrypted_suffix`, `unencrypted_regex` and `mac_only_encrypted`.
//! Not supported: PGP/KMS/Vault-transit keys, key groups (Shamir), comment
//! regexes, YAML comments (dropped on decrypt), multi-document YAML, INI/dotenv/binary.
//!
//! # Expected flow
//!
//! ```no_run
//! use kubectl_vault::store::sops::{self, EncryptOptions, Format, Identities, Recipient};
//! # fn main() -> Result<(), sops::SopsError> {
//! let recipient = Recipient::parse("age1...")?;
//! let opts = EncryptOptions { recipients: vec![recipient], encrypted_regex: None };
//! let doc = sops::encrypt(r#"{"root_token":"hvs.x"}"#, Format::Json, &opts)?;
//! let ids = Identities::from_sops_env()?;
//! let plain = sops::decrypt(&doc, Format::Json, &ids)?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - [`decrypt`] returns text only after the document's MAC verified: any edit
//!   of a value (encrypted or not), any reordering of values, and any edit of
//!   the MAC itself is refused.
//! - Key order is kept in both directions. YAML output quotes every string.
//! - No error and no `Debug` output holds a plaintext value, the data key or an
//!   identity; errors name key paths (`unseal_keys_b64[2]`), recipients and files.
//! - The data key and the per-value plaintext buffers this module owns are
//!   zeroized when dropped, and the decrypted tree is scrubbed before returning.
//!
//! # Caveats
//!
//! - The returned plaintext `String` belongs to the caller, who should wrap it
//!   (e.g. in `zeroize::Zeroizing`). Buffers inside serde and re-allocations
//!   while emitting text are not scrubbed.
//! - JSON numbers are float64 as in sops: integers above 2^53 lose precision.

mod age_keys;
mod document;
mod mac;
mod metadata;
mod value;

use std::path::PathBuf;

use zeroize::Zeroize;

pub use age_keys::{Identities, Recipient};
pub use document::Format;

use age_keys::UnwrapError;
use document::Node;
use mac::{Mac, Path, Rules, Step};
use metadata::{AgeStanza, Metadata};
use value::{DataKey, OpenError, Sealed, ValueType};

/// The default `unencrypted_suffix` sops writes.
pub const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// The `encrypted_regex` Flux expects for Secret manifests.
pub const FLUX_ENCRYPTED_REGEX: &str = "^(data|stringData)$";

/// How to encrypt a document.
#[derive(Debug, Clone, Default)]
pub struct EncryptOptions {
    /// Who can decrypt; at least one.
    pub recipients: Vec<Recipient>,
    /// Encrypt only values under a key matching this (unanchored) regex, e.g.
    /// [`FLUX_ENCRYPTED_REGEX`]. `None` encrypts every value except those under a
    /// key ending in `_unencrypted`. The MAC covers all values either way.
    pub encrypted_regex: Option<String>,
}

/// What went wrong reading or writing a sops document. Messages name paths,
/// fields, recipients and files, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    #[error("cannot parse the {format} document: {reason}")]
    Parse {
        format: &'static str,
        reason: String,
    },
    #[error("cannot write the {format} document: {reason}")]
    Emit {
        format: &'static str,
        reason: String,
    },
    #[error("not a sops document: there is no top-level `sops` block")]
    NotSopsDocument,
    #[error(
        "the document already has a top-level `sops` key, which sops reserves for its metadata"
    )]
    ReservedKey,
    #[error(
        "the sops metadata has no `version`; sops refuses such a document (was the block edited?)"
    )]
    MissingVersion,
    #[error("the sops metadata field `{field}` {reason}")]
    MalformedMetadata {
        field: &'static str,
        reason: &'static str,
    },
    #[error("the sops metadata uses `{field}`, which this tool does not support; decrypt with `sops -d`")]
    UnsupportedMetadata { field: &'static str },
    #[error("invalid regex `{regex}`: {reason}")]
    InvalidRegex { regex: String, reason: String },
    #[error("the document has no age recipient{}", if others.is_empty() { String::new() } else { format!(" (only {} keys)", others.join(", ")) })]
    NoAgeRecipients { others: Vec<String> },
    #[error("no age identity matches this document; it is encrypted for [{}]; identities were looked for in: {}; point SOPS_AGE_KEY_FILE (or --age-identity) at a key for one of those recipients", recipients.join(", "), if sources.is_empty() { "nowhere (none given)".to_string() } else { sources.join("; ") })]
    NoMatchingIdentity {
        recipients: Vec<String>,
        sources: Vec<String>,
    },
    #[error("the age stanza for {recipient} is malformed: {reason}")]
    MalformedAgeStanza { recipient: String, reason: String },
    #[error("the value at `{path}` is not a valid sops encrypted value: {reason}")]
    MalformedValue { path: String, reason: &'static str },
    #[error("the value at `{path}` should be encrypted but is plain text (was it edited?)")]
    ValueNotEncrypted { path: String },
    #[error("the value at `{path}` does not decrypt: it was edited, moved, or encrypted with another data key")]
    DecryptValue { path: String },
    #[error("the document was modified: its MAC does not decrypt (`sops.mac` or `sops.lastmodified` was edited)")]
    MacUnreadable,
    #[error("the document was modified: MAC mismatch")]
    MacMismatch,
    #[error("no age recipient given: at least one is needed to encrypt")]
    NoRecipients,
    #[error("invalid age recipient `{value}`: {reason}")]
    InvalidRecipient { value: String, reason: &'static str },
    #[error("invalid age identity in {origin} at line {line}: {reason}")]
    InvalidIdentity {
        origin: String,
        line: usize,
        reason: &'static str,
    },
    #[error("cannot read the age identity file {}", path.display())]
    ReadIdentityFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wrap the data key for {recipient}: {reason}")]
    WrapDataKey { recipient: String, reason: String },
}

/// Encrypts a plaintext document for `opts.recipients`; returns the sops
/// document as text in the same format.
///
/// The plaintext root must be a mapping without a top-level `sops` key.
/// Empty strings and nulls stay as they are (as sops leaves them).
pub fn encrypt(plain: &str, format: Format, opts: &EncryptOptions) -> Result<String, SopsError> {
    if opts.recipients.is_empty() {
        return Err(SopsError::NoRecipients);
    }
    let mut tree = Scrubbed(document::parse(plain, format)?);
    if tree.0.iter().any(|(k, _)| k == "sops") {
        return Err(SopsError::ReservedKey);
    }
    let encrypted_regex = opts.encrypted_regex.clone().filter(|r| !r.is_empty());
    let rules = match &encrypted_regex {
        Some(regex) => Rules {
            encrypted_regex: Some(Rules::compile_regex(regex)?),
            ..Rules::default()
        },
        None => Rules {
            unencrypted_suffix: Some(DEFAULT_UNENCRYPTED_SUFFIX.into()),
            ..Rules::default()
        },
    };
    let key = DataKey::generate();
    let mut mac = rules.mac();
    let mut path = Path::default();
    for (k, v) in tree.0.iter_mut() {
        path.push(Step::Key(k.clone()));
        seal_node(v, &mut path, &rules, &key, &mut mac);
        path.pop();
    }
    let lastmodified = metadata::now_rfc3339();
    let digest = mac.finish();
    let mac_value = value::seal(
        &key,
        digest.as_bytes(),
        metadata::mac_aad(&lastmodified).as_bytes(),
        ValueType::Str,
    );
    let age = opts
        .recipients
        .iter()
        .map(|r| {
            Ok(AgeStanza {
                recipient: r.to_string(),
                enc: age_keys::wrap(&key, r)?,
            })
        })
        .collect::<Result<_, SopsError>>()?;
    let meta = Metadata {
        age,
        lastmodified,
        mac: mac_value,
        rules,
        encrypted_regex,
    };
    tree.0.push(("sops".into(), meta.to_node()));
    document::emit(&tree.0, format)
}

fn seal_node(node: &mut Node, path: &mut Path, rules: &Rules, key: &DataKey, mac: &mut Mac) {
    match node {
        Node::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(Step::Key(k.clone()));
                seal_node(v, path, rules, key, mac);
                path.pop();
            }
        }
        Node::List(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(Step::Index(i));
                seal_node(v, path, rules, key, mac);
                path.pop();
            }
        }
        Node::Null => {}
        scalar => {
            let encrypted = rules.encrypts(path);
            mac.add(scalar, encrypted);
            if !encrypted || matches!(scalar, Node::Str(s) if s.is_empty()) {
                return;
            }
            if let Some((bytes, kind)) = mac::plaintext_bytes(scalar) {
                let sealed = value::seal(key, &bytes, path.aad().as_bytes(), kind);
                scrub(scalar);
                *scalar = Node::Str(sealed);
            }
        }
    }
}

/// Decrypts a sops document with `ids`; returns the plaintext document in the
/// same format, key order preserved, the `sops` block removed.
///
/// # Guarantees
///
/// Returns only after the MAC over all values verified. Fails with
/// [`SopsError::NoMatchingIdentity`] (naming the document's recipients and the
/// places `ids` came from) when no identity opens an age stanza.
pub fn decrypt(doc: &str, format: Format, ids: &Identities) -> Result<String, SopsError> {
    let mut tree = Scrubbed(document::parse(doc, format)?);
    let block = take_sops_block(&mut tree.0)?;
    let meta = Metadata::read(&block)?;
    let key = unwrap_data_key(&meta.age, ids)?;
    let mut mac = meta.rules.mac();
    let mut path = Path::default();
    for (k, v) in tree.0.iter_mut() {
        path.push(Step::Key(k.clone()));
        open_node(v, &mut path, &meta.rules, &key, &mut mac)?;
        path.pop();
    }
    let stored = Sealed::parse(&meta.mac).map_err(|_| SopsError::MacUnreadable)?;
    let stored = stored
        .open(&key, metadata::mac_aad(&meta.lastmodified).as_bytes())
        .map_err(|_| SopsError::MacUnreadable)?;
    if mac.finish().as_bytes() != stored.as_slice() {
        return Err(SopsError::MacMismatch);
    }
    document::emit(&tree.0, format)
}

fn open_node(
    node: &mut Node,
    path: &mut Path,
    rules: &Rules,
    key: &DataKey,
    mac: &mut Mac,
) -> Result<(), SopsError> {
    match node {
        Node::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(Step::Key(k.clone()));
                open_node(v, path, rules, key, mac)?;
                path.pop();
            }
        }
        Node::List(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(Step::Index(i));
                open_node(v, path, rules, key, mac)?;
                path.pop();
            }
        }
        Node::Null => {}
        scalar => {
            let encrypted = rules.encrypts(path);
            if encrypted {
                let opened = open_scalar(scalar, path, key)?;
                if let Some(opened) = opened {
                    scrub(scalar);
                    *scalar = opened;
                }
            }
            mac.add(scalar, encrypted);
        }
    }
    Ok(())
}

/// Opens one encrypted scalar; `None` for the empty string, which sops leaves as is.
fn open_scalar(node: &Node, path: &Path, key: &DataKey) -> Result<Option<Node>, SopsError> {
    let text = match node {
        Node::Str(s) if s.is_empty() => return Ok(None),
        Node::Str(s) if s.starts_with("ENC[") => s,
        _ => {
            return Err(SopsError::ValueNotEncrypted {
                path: path.display(),
            })
        }
    };
    let sealed = Sealed::parse(text).map_err(|e| SopsError::MalformedValue {
        path: path.display(),
        reason: match e {
            OpenError::Malformed(reason) => reason,
            OpenError::Authentication => "authentication failed",
        },
    })?;
    if sealed.kind == ValueType::Comment {
        return Err(SopsError::MalformedValue {
            path: path.display(),
            reason: "a comment stands where a value should",
        });
    }
    let plain = sealed
        .open(key, path.aad().as_bytes())
        .map_err(|_| SopsError::DecryptValue {
            path: path.display(),
        })?;
    mac::scalar_from_plaintext(&plain, sealed.kind)
        .map(Some)
        .ok_or_else(|| SopsError::MalformedValue {
            path: path.display(),
            reason: "the decrypted text is not a valid value of its type",
        })
}

fn unwrap_data_key(stanzas: &[AgeStanza], ids: &Identities) -> Result<DataKey, SopsError> {
    let mut malformed = None;
    for stanza in stanzas {
        match age_keys::unwrap(&stanza.enc, ids) {
            Ok(key) => return Ok(key),
            Err(UnwrapError::NoMatch) => {}
            Err(UnwrapError::Malformed(reason)) => {
                // A broken stanza for a key we hold is the real cause; others
                // only matter when nothing else is left to blame.
                if ids.holds(&stanza.recipient) || malformed.is_none() {
                    let held = ids.holds(&stanza.recipient);
                    malformed = Some((held, stanza.recipient.clone(), reason));
                }
            }
        }
    }
    match malformed {
        Some((true, recipient, reason)) => Err(SopsError::MalformedAgeStanza { recipient, reason }),
        Some((false, recipient, reason)) if ids.is_empty() || stanzas.len() == 1 => {
            Err(SopsError::MalformedAgeStanza { recipient, reason })
        }
        _ => Err(SopsError::NoMatchingIdentity {
            recipients: stanzas.iter().map(|s| s.recipient.clone()).collect(),
            sources: ids.sources().to_vec(),
        }),
    }
}

fn take_sops_block(tree: &mut Vec<(String, Node)>) -> Result<Node, SopsError> {
    let at = tree
        .iter()
        .position(|(k, v)| k == "sops" && matches!(v, Node::Map(_)))
        .ok_or(SopsError::NotSopsDocument)?;
    Ok(tree.remove(at).1)
}

/// Whether `doc` parses as `format` and has a top-level `sops` mapping. Never fails.
pub fn is_encrypted(doc: &str, format: Format) -> bool {
    document::parse(doc, format)
        .map(|tree| {
            tree.iter()
                .any(|(k, v)| k == "sops" && matches!(v, Node::Map(_)))
        })
        .unwrap_or(false)
}

/// The age recipients (`age1…`) a sops document is encrypted for, in document order.
pub fn recipients(doc: &str, format: Format) -> Result<Vec<String>, SopsError> {
    let mut tree = document::parse(doc, format)?;
    let block = take_sops_block(&mut tree)?;
    Ok(metadata::read_recipients(&block)?
        .into_iter()
        .map(|s| s.recipient)
        .collect())
}

/// A parsed tree whose strings are overwritten when it is dropped.
struct Scrubbed(Vec<(String, Node)>);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        for (_, v) in self.0.iter_mut() {
            scrub(v);
        }
    }
}

fn scrub(node: &mut Node) {
    match node {
        Node::Str(s) | Node::Time(s) => s.zeroize(),
        Node::Map(entries) => entries.iter_mut().for_each(|(_, v)| scrub(v)),
        Node::List(items) => items.iter_mut().for_each(scrub),
        Node::Int(i) => *i = 0,
        Node::Float(f) => *f = 0.0,
        Node::Bool(b) => *b = false,
        Node::Null => {}
    }
}

#[cfg(test)]
mod tests;
