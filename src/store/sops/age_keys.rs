//! age recipients and identities, and wrapping the data key for them.
//!
//! Decides where identities are found (the sops conventions: `SOPS_AGE_KEY`,
//! `SOPS_AGE_KEY_FILE`, `$XDG_CONFIG_HOME/sops/age/keys.txt` or
//! `~/.config/sops/age/keys.txt`, all merged), how identity text is read (one
//! `AGE-SECRET-KEY-1…` per line, `#` comments and blank lines skipped), and how
//! one `sops.age[]` stanza is written and opened (an armored age file holding
//! the 32 raw data-key bytes). Only X25519 keys are supported: no SSH keys, no
//! plugins, no passphrases.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format as ArmorFormat};
use zeroize::Zeroizing;

use super::value::DataKey;
use super::SopsError;

/// An age X25519 public key (`age1…`), validated. `Display` prints it.
#[derive(Clone)]
pub struct Recipient {
    key: age::x25519::Recipient,
    text: String,
}

impl Recipient {
    /// Parses and validates an `age1…` public key.
    pub fn parse(text: &str) -> Result<Self, SopsError> {
        let trimmed = text.trim();
        let key = age::x25519::Recipient::from_str(trimmed).map_err(|reason| {
            SopsError::InvalidRecipient {
                value: trimmed.to_string(),
                reason,
            }
        })?;
        Ok(Recipient {
            text: key.to_string(),
            key,
        })
    }

    /// The `age1…` text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Recipient {
    type Err = SopsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Recipient::parse(s)
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.text)
    }
}

impl PartialEq for Recipient {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Recipient {}

/// A set of age X25519 identities (secret keys) and a note of where they were
/// looked for. `Debug` shows the count and the places, never a key.
#[derive(Default)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    sources: Vec<String>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("keys", &format_args!("{} key(s) ****", self.keys.len()))
            .field("sources", &self.sources)
            .finish()
    }
}

impl Identities {
    /// The identities sops itself would use, merged: `SOPS_AGE_KEY` (one or more
    /// lines, comments allowed), the file named by `SOPS_AGE_KEY_FILE`, and
    /// `$XDG_CONFIG_HOME/sops/age/keys.txt` (or `$HOME/.config/sops/age/keys.txt`).
    ///
    /// A missing default file is not an error; a named file that cannot be read
    /// is. Finding no key at all is not an error either: `decrypt` reports the
    /// places looked at when nothing matches.
    pub fn from_sops_env() -> Result<Self, SopsError> {
        let mut ids = Identities::default();
        match std::env::var("SOPS_AGE_KEY") {
            Ok(text) => {
                let text = Zeroizing::new(text);
                ids = ids.merge(Self::from_key_text_with_source(&text, "SOPS_AGE_KEY")?);
            }
            Err(_) => ids.sources.push("SOPS_AGE_KEY (not set)".into()),
        }
        match std::env::var_os("SOPS_AGE_KEY_FILE") {
            Some(path) => {
                let path = PathBuf::from(path);
                let mut found = Self::from_file(&path)?;
                for s in &mut found.sources {
                    *s = format!("SOPS_AGE_KEY_FILE={s}");
                }
                ids = ids.merge(found);
            }
            None => ids.sources.push("SOPS_AGE_KEY_FILE (not set)".into()),
        }
        if let Some(path) = default_keys_file() {
            if path.exists() {
                ids = ids.merge(Self::from_file(&path)?);
            } else {
                ids.sources.push(format!("{} (not found)", path.display()));
            }
        }
        Ok(ids)
    }

    /// Identities from identity files (`--age-identity FILE`), merged.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self, SopsError> {
        paths.iter().try_fold(Identities::default(), |acc, path| {
            Ok(acc.merge(Self::from_file(path)?))
        })
    }

    /// Identities from key text, such as the value of a Flux Secret's `*.agekey` data key.
    pub fn from_key_text(text: &str) -> Result<Self, SopsError> {
        Self::from_key_text_with_source(text, "key text")
    }

    /// As [`Identities::from_key_text`], naming where the text came from (for
    /// messages), e.g. `secret flux-system/sops-age key age.agekey`.
    pub fn from_key_text_with_source(text: &str, source: &str) -> Result<Self, SopsError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let reason = if line.starts_with("AGE-SECRET-KEY-1") {
                match age::x25519::Identity::from_str(line) {
                    Ok(key) => {
                        keys.push(key);
                        continue;
                    }
                    Err(reason) => reason,
                }
            } else if line.starts_with("AGE-PLUGIN-") {
                "age plugin identities are not supported"
            } else {
                "not an AGE-SECRET-KEY-1 line"
            };
            return Err(SopsError::InvalidIdentity {
                origin: source.to_string(),
                line: n + 1,
                reason,
            });
        }
        Ok(Identities {
            sources: vec![format!("{source} ({} key(s))", keys.len())],
            keys,
        })
    }

    fn from_file(path: &Path) -> Result<Self, SopsError> {
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|source| SopsError::ReadIdentityFile {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_key_text_with_source(&text, &path.display().to_string())
    }

    /// Both sets of keys; both lists of places.
    pub fn merge(mut self, other: Self) -> Self {
        self.keys.extend(other.keys);
        self.sources.extend(other.sources);
        self
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no identity was found.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public keys of these identities.
    pub fn recipients(&self) -> Vec<Recipient> {
        self.keys
            .iter()
            .map(|k| {
                let key = k.to_public();
                Recipient {
                    text: key.to_string(),
                    key,
                }
            })
            .collect()
    }

    /// Where identities were looked for, e.g. `SOPS_AGE_KEY (1 key(s))`.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    pub(crate) fn holds(&self, recipient: &str) -> bool {
        self.recipients().iter().any(|r| r.as_str() == recipient)
    }
}

fn default_keys_file() -> Option<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(config.join("sops").join("age").join("keys.txt"))
}

/// Writes `key` as an armored age file for one recipient.
pub(crate) fn wrap(key: &DataKey, recipient: &Recipient) -> Result<String, SopsError> {
    let fail = |reason: String| SopsError::WrapDataKey {
        recipient: recipient.to_string(),
        reason,
    };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient.key as &dyn age::Recipient))
            .map_err(|e| fail(e.to_string()))?;
    let armored = ArmoredWriter::wrap_output(Vec::new(), ArmorFormat::AsciiArmor)
        .map_err(|e| fail(e.to_string()))?;
    let mut writer = encryptor
        .wrap_output(armored)
        .map_err(|e| fail(e.to_string()))?;
    writer
        .write_all(key.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let bytes = writer
        .finish()
        .and_then(|armored| armored.finish())
        .map_err(|e| fail(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| fail("armor is not UTF-8".into()))
}

/// Why one stanza did not yield the data key.
#[derive(Debug)]
pub(crate) enum UnwrapError {
    /// None of the identities is a recipient of this stanza.
    NoMatch,
    /// The stanza is not a readable age file, or did not hold a 32-byte key.
    Malformed(String),
}

/// Opens one `sops.age[].enc` armored age file with any of `ids`.
pub(crate) fn unwrap(enc: &str, ids: &Identities) -> Result<DataKey, UnwrapError> {
    let reader = ArmoredReader::new(enc.as_bytes());
    let decryptor =
        age::Decryptor::new(reader).map_err(|e| UnwrapError::Malformed(e.to_string()))?;
    let mut stream = decryptor
        .decrypt(ids.keys.iter().map(|k| k as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => UnwrapError::NoMatch,
            other => UnwrapError::Malformed(other.to_string()),
        })?;
    let mut plain = Zeroizing::new(Vec::with_capacity(32));
    // Read at most 33 bytes: a data key is 32, anything longer is not one.
    (&mut stream)
        .take(33)
        .read_to_end(&mut plain)
        .map_err(|e| UnwrapError::Malformed(e.to_string()))?;
    DataKey::from_slice(&plain).ok_or_else(|| {
        UnwrapError::Malformed(format!("holds {} bytes, not a 32-byte key", plain.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";

    #[test]
    fn key_text_skips_comments_and_blank_lines() {
        let text = format!("# created: now\n# public key: age1...\n\n{KEY}\n");
        let ids = Identities::from_key_text(&text).unwrap();
        assert_eq!(ids.len(), 1);
        assert!(ids.recipients()[0].as_str().starts_with("age1"));
    }

    #[test]
    fn bad_lines_are_named_by_number_never_by_content() {
        let text = format!("{KEY}\nAGE-SECRET-KEY-1NOTAKEY\n");
        let err = Identities::from_key_text(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(
            !msg.contains("NOTAKEY") && !msg.contains(&KEY[20..]),
            "{msg}"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let ids = Identities::from_key_text(KEY).unwrap();
        let dbg = format!("{ids:?}");
        assert!(
            !dbg.contains("AGE-SECRET") && !dbg.contains(&KEY[20..30]),
            "{dbg}"
        );
        assert!(dbg.contains("1 key(s)"), "{dbg}");
    }

    #[test]
    fn wrap_then_unwrap_returns_the_key_only_for_the_recipient() {
        let ids = Identities::from_key_text(KEY).unwrap();
        let recipient = ids.recipients().remove(0);
        let key = DataKey::from_slice(&[9u8; 32]).unwrap();
        let enc = wrap(&key, &recipient).unwrap();
        assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
        assert!(enc.ends_with("-----END AGE ENCRYPTED FILE-----\n"));
        assert_eq!(unwrap(&enc, &ids).unwrap().as_bytes(), &[9u8; 32]);
        let other = Identities {
            keys: vec![age::x25519::Identity::generate()],
            sources: vec![],
        };
        assert!(matches!(unwrap(&enc, &other), Err(UnwrapError::NoMatch)));
        let truncated = &enc[..enc.len() / 2];
        assert!(matches!(
            unwrap(truncated, &ids),
            Err(UnwrapError::Malformed(_))
        ));
    }

    #[test]
    fn recipients_are_validated() {
        assert!(Recipient::parse("age1nope").is_err());
        let good = Identities::from_key_text(KEY)
            .unwrap()
            .recipients()
            .remove(0);
        assert_eq!(Recipient::parse(good.as_str()).unwrap(), good);
    }
}
