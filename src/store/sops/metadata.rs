//! The top-level `sops` block: reading it from a document and writing it.
//!
//! Decides which fields are required (`version`, `lastmodified`, `mac`), which
//! options are honoured (the four selection options and `mac_only_encrypted`)
//! and which are refused as unsupported (key groups, Shamir, comment regexes).
//! Leaves the cryptography to `value` and `age_keys`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::document::Node;
use super::mac::Rules;
use super::SopsError;

/// The version written into new documents: the sops release this format was checked against.
pub(crate) const WRITTEN_VERSION: &str = "3.11.0";

/// One `sops.age[]` entry.
#[derive(Debug, Clone)]
pub(crate) struct AgeStanza {
    pub(crate) recipient: String,
    pub(crate) enc: String,
}

/// What a `sops` block says.
#[derive(Debug)]
pub(crate) struct Metadata {
    pub(crate) age: Vec<AgeStanza>,
    pub(crate) lastmodified: String,
    pub(crate) mac: String,
    pub(crate) rules: Rules,
    /// The regex as written, kept for re-emitting.
    pub(crate) encrypted_regex: Option<String>,
}

/// Key kinds sops supports that this module does not; named in the error when a
/// document holds no age stanza.
const OTHER_KEY_KINDS: [&str; 6] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"];

/// The age recipients listed in a `sops` block (no other field is checked).
pub(crate) fn read_recipients(block: &Node) -> Result<Vec<AgeStanza>, SopsError> {
    let Node::Map(_) = block else {
        return Err(SopsError::MalformedMetadata {
            field: "sops",
            reason: "is not a mapping",
        });
    };
    let Some(list) = block.get("age") else {
        return Ok(Vec::new());
    };
    let items = match list {
        Node::List(items) => items,
        Node::Null => return Ok(Vec::new()),
        _ => {
            return Err(SopsError::MalformedMetadata {
                field: "age",
                reason: "is not a list",
            })
        }
    };
    items
        .iter()
        .map(|item| {
            let field = |name: &'static str| {
                item.get(name)
                    .and_then(Node::as_str)
                    .map(str::to_string)
                    .ok_or(SopsError::MalformedMetadata {
                        field: "age",
                        reason: if name == "enc" {
                            "an entry has no enc string"
                        } else {
                            "an entry has no recipient string"
                        },
                    })
            };
            Ok(AgeStanza {
                recipient: field("recipient")?,
                enc: field("enc")?,
            })
        })
        .collect()
}

impl Metadata {
    /// Reads a `sops` block. `version` is checked first: sops refuses a
    /// document without it, and so does this.
    pub(crate) fn read(block: &Node) -> Result<Self, SopsError> {
        let age = read_recipients(block)?;
        match block.get("version") {
            Some(Node::Str(v)) if !v.trim().is_empty() => {}
            Some(Node::Float(_) | Node::Int(_)) => {}
            _ => return Err(SopsError::MissingVersion),
        }
        for field in [
            "key_groups",
            "shamir_threshold",
            "encrypted_comment_regex",
            "unencrypted_comment_regex",
        ] {
            if block.get(field).is_some_and(|v| *v != Node::Null) {
                return Err(SopsError::UnsupportedMetadata { field });
            }
        }
        if age.is_empty() {
            let others = OTHER_KEY_KINDS
                .iter()
                .filter(|kind| matches!(block.get(kind), Some(Node::List(l)) if !l.is_empty()))
                .map(|kind| kind.to_string())
                .collect();
            return Err(SopsError::NoAgeRecipients { others });
        }
        let string =
            |field: &'static str| -> Result<Option<String>, SopsError> {
                match block.get(field) {
                    None | Some(Node::Null) => Ok(None),
                    Some(node) => node.as_str().map(|s| Some(s.to_string())).ok_or(
                        SopsError::MalformedMetadata {
                            field,
                            reason: "is not a string",
                        },
                    ),
                }
            };
        let required = |field: &'static str| {
            string(field)?.ok_or(SopsError::MalformedMetadata {
                field,
                reason: "is missing",
            })
        };
        let lastmodified = required("lastmodified")?;
        let mac = required("mac")?;
        let encrypted_regex = string("encrypted_regex")?.filter(|s| !s.is_empty());
        let rules = Rules {
            unencrypted_suffix: string("unencrypted_suffix")?.filter(|s| !s.is_empty()),
            encrypted_suffix: string("encrypted_suffix")?.filter(|s| !s.is_empty()),
            unencrypted_regex: string("unencrypted_regex")?
                .filter(|s| !s.is_empty())
                .map(|r| Rules::compile_regex(&r))
                .transpose()?,
            encrypted_regex: encrypted_regex
                .as_deref()
                .map(Rules::compile_regex)
                .transpose()?,
            mac_only_encrypted: matches!(block.get("mac_only_encrypted"), Some(Node::Bool(true))),
        };
        Ok(Metadata {
            age,
            lastmodified,
            mac,
            rules,
            encrypted_regex,
        })
    }

    /// The `sops` block as a node, fields in the order sops writes them.
    pub(crate) fn to_node(&self) -> Node {
        let age = self
            .age
            .iter()
            .map(|s| {
                Node::Map(vec![
                    ("recipient".into(), Node::Str(s.recipient.clone())),
                    ("enc".into(), Node::Str(s.enc.clone())),
                ])
            })
            .collect();
        let mut block = vec![
            ("age".to_string(), Node::List(age)),
            ("lastmodified".into(), Node::Str(self.lastmodified.clone())),
            ("mac".into(), Node::Str(self.mac.clone())),
        ];
        match (&self.encrypted_regex, &self.rules.unencrypted_suffix) {
            (Some(regex), _) => block.push(("encrypted_regex".into(), Node::Str(regex.clone()))),
            (None, Some(suffix)) => {
                block.push(("unencrypted_suffix".into(), Node::Str(suffix.clone())))
            }
            (None, None) => {}
        }
        block.push(("version".into(), Node::Str(WRITTEN_VERSION.into())));
        Node::Map(block)
    }
}

/// The additional data sops binds the MAC to: `lastmodified` as Go's
/// `time.RFC3339` prints it (whole seconds).
pub(crate) fn mac_aad(lastmodified: &str) -> String {
    super::mac::rfc3339_seconds(lastmodified)
}

/// Now, as `2026-11-25T00:00:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_utc(secs)
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp (proleptic Gregorian).
pub(crate) fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), era-based.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_651_199), "2026-11-25T23:59:59Z");
        let now = now_rfc3339();
        assert_eq!(now.len(), 20);
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn missing_or_empty_version_is_named() {
        for version in [None, Some(Node::Str(String::new())), Some(Node::Null)] {
            let mut entries = vec![("age".to_string(), Node::List(vec![]))];
            entries.extend(version.map(|v| ("version".to_string(), v)));
            assert!(matches!(
                Metadata::read(&Node::Map(entries)),
                Err(SopsError::MissingVersion)
            ));
        }
    }

    #[test]
    fn key_groups_are_refused_as_unsupported() {
        let block = Node::Map(vec![
            ("key_groups".into(), Node::List(vec![Node::Map(vec![])])),
            ("version".into(), Node::Str("3.11.0".into())),
        ]);
        assert!(matches!(
            Metadata::read(&block),
            Err(SopsError::UnsupportedMetadata {
                field: "key_groups"
            })
        ));
    }

    #[test]
    fn pgp_only_documents_name_the_other_key_kind() {
        let block = Node::Map(vec![
            ("pgp".into(), Node::List(vec![Node::Map(vec![])])),
            ("version".into(), Node::Str("3.11.0".into())),
        ]);
        match Metadata::read(&block) {
            Err(SopsError::NoAgeRecipients { others }) => assert_eq!(others, ["pgp"]),
            other => panic!("{other:?}"),
        }
    }
}
