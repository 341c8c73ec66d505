//! The document MAC and the rules that say which values are encrypted.
//!
//! Decides the bytes each scalar contributes to the SHA-512 MAC and the bytes
//! encrypted for it (as sops's `ToBytes`: booleans `True`/`False`, numbers as Go
//! prints a float64 or an int, timestamps as their RFC 3339 text), the
//! additional data of a value (each map key on the path followed by `:`, list
//! items add nothing), and which paths are encrypted (`unencrypted_suffix`,
//! `encrypted_suffix`, `unencrypted_regex`, `encrypted_regex`, each matched
//! against every key on the path, regexes unanchored).

use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::document::Node;
use super::value::ValueType;
use super::SopsError;

/// One step from the root to a value: a map key or a list position.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// Where a value sits, for additional data and for error messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path(Vec<Step>);

impl Path {
    pub(crate) fn push(&mut self, step: Step) {
        self.0.push(step)
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
    }

    /// The additional data sops binds to a value: `a:b:` for `{a: {b: v}}` and
    /// for `{a: [{b: v}]}` alike.
    pub(crate) fn aad(&self) -> String {
        let mut aad = String::new();
        for key in self.keys() {
            aad.push_str(key);
            aad.push(':');
        }
        aad
    }

    /// `a.b[2].c`, for messages; names keys and positions, never values.
    pub(crate) fn display(&self) -> String {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// The selection options of a `sops` block.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    pub(crate) unencrypted_suffix: Option<String>,
    pub(crate) encrypted_suffix: Option<String>,
    pub(crate) unencrypted_regex: Option<regex_lite::Regex>,
    pub(crate) encrypted_regex: Option<regex_lite::Regex>,
    pub(crate) mac_only_encrypted: bool,
}

/// Written into the hash first when `mac_only_encrypted` is set, so the two
/// kinds of MAC never coincide: SHA-256 of the ASCII bytes `sops`.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

impl Rules {
    pub(crate) fn compile_regex(regex: &str) -> Result<regex_lite::Regex, SopsError> {
        regex_lite::Regex::new(regex).map_err(|e| SopsError::InvalidRegex {
            regex: regex.to_string(),
            reason: e.to_string(),
        })
    }

    /// Whether the value at `path` is (to be) encrypted, in sops's order of precedence.
    pub(crate) fn encrypts(&self, path: &Path) -> bool {
        let mut encrypted = true;
        if let Some(suffix) = &self.unencrypted_suffix {
            if path.keys().any(|k| k.ends_with(suffix.as_str())) {
                encrypted = false;
            }
        }
        if let Some(suffix) = &self.encrypted_suffix {
            encrypted = path.keys().any(|k| k.ends_with(suffix.as_str()));
        }
        if let Some(re) = &self.unencrypted_regex {
            if path.keys().any(|k| re.is_match(k)) {
                encrypted = false;
            }
        }
        if let Some(re) = &self.encrypted_regex {
            encrypted = path.keys().any(|k| re.is_match(k));
        }
        encrypted
    }

    /// A fresh MAC accumulator for these rules.
    pub(crate) fn mac(&self) -> Mac {
        let mut hasher = Sha512::new();
        if self.mac_only_encrypted {
            hasher.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        Mac {
            hasher,
            only_encrypted: self.mac_only_encrypted,
        }
    }
}

/// The running SHA-512 over a document's values in document order.
pub(crate) struct Mac {
    hasher: Sha512,
    only_encrypted: bool,
}

impl Mac {
    /// Adds one scalar (nulls and containers add nothing; the caller walks containers).
    pub(crate) fn add(&mut self, node: &Node, encrypted: bool) {
        if self.only_encrypted && !encrypted {
            return;
        }
        if let Some(bytes) = mac_bytes(node) {
            self.hasher.update(bytes.as_slice());
        }
    }

    /// 128 upper-case hex digits, as sops writes it before encrypting it.
    pub(crate) fn finish(self) -> Zeroizing<String> {
        let digest = self.hasher.finalize();
        let mut hex = Zeroizing::new(String::with_capacity(128));
        for b in digest {
            hex.push_str(&format!("{b:02X}"));
        }
        hex
    }
}

/// The bytes a scalar adds to the MAC, `None` for nulls and containers.
pub(crate) fn mac_bytes(node: &Node) -> Option<Zeroizing<Vec<u8>>> {
    Some(Zeroizing::new(match node {
        Node::Str(s) => s.as_bytes().to_vec(),
        Node::Time(s) => s.as_bytes().to_vec(),
        Node::Int(i) => i.to_string().into_bytes(),
        Node::Float(f) => go_float(*f).into_bytes(),
        Node::Bool(true) => b"True".to_vec(),
        Node::Bool(false) => b"False".to_vec(),
        Node::Null | Node::Map(_) | Node::List(_) => return None,
    }))
}

/// The bytes that are encrypted for a scalar and the `type:` written with them;
/// `None` for nulls and containers.
pub(crate) fn plaintext_bytes(node: &Node) -> Option<(Zeroizing<Vec<u8>>, ValueType)> {
    Some(match node {
        Node::Str(s) => (Zeroizing::new(s.as_bytes().to_vec()), ValueType::Str),
        Node::Time(s) => (Zeroizing::new(s.as_bytes().to_vec()), ValueType::Time),
        Node::Int(i) => (Zeroizing::new(i.to_string().into_bytes()), ValueType::Int),
        Node::Float(f) => (Zeroizing::new(go_float(*f).into_bytes()), ValueType::Float),
        // sops encrypts booleans capitalised too (`True`), as it hashes them.
        Node::Bool(true) => (Zeroizing::new(b"True".to_vec()), ValueType::Bool),
        Node::Bool(false) => (Zeroizing::new(b"False".to_vec()), ValueType::Bool),
        Node::Null | Node::Map(_) | Node::List(_) => return None,
    })
}

/// The scalar a decrypted plaintext stands for, by its `type:`; `None` when the
/// text is not a valid value of that type.
pub(crate) fn scalar_from_plaintext(bytes: &[u8], kind: ValueType) -> Option<Node> {
    let text = std::str::from_utf8(bytes).ok()?;
    Some(match kind {
        ValueType::Str => Node::Str(text.to_string()),
        ValueType::Int => Node::Int(text.parse().ok()?),
        ValueType::Float => Node::Float(parse_go_float(text)?),
        ValueType::Bool => Node::Bool(match text {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => return None,
        }),
        ValueType::Time => Node::Time(text.to_string()),
        ValueType::Comment => return None,
    })
}

/// `strconv.FormatFloat(f, 'f', -1, 64)`: shortest digits that round-trip, never
/// an exponent. Rust's `Display` for `f64` has the same contract.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{f}")
    }
}

fn parse_go_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// Go's `time.RFC3339` text of an RFC 3339 timestamp: fractional seconds
/// dropped (`2001-12-14T21:59:43.1-05:00` becomes `2001-12-14T21:59:43-05:00`).
/// sops binds the MAC to `lastmodified` printed this way.
pub(crate) fn rfc3339_seconds(s: &str) -> String {
    match s.find('.') {
        Some(dot)
            if dot == 19
                && s.as_bytes()
                    .get(10)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&b'T')) =>
        {
            let rest = &s[dot + 1..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            format!("{}{}", &s[..dot], &rest[digits..])
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(steps: &[Step]) -> Path {
        Path(steps.to_vec())
    }

    #[test]
    fn aad_is_map_keys_each_followed_by_colon_list_items_add_nothing() {
        let p = path(&[Step::Key("unseal_keys_b64".into()), Step::Index(1)]);
        assert_eq!(p.aad(), "unseal_keys_b64:");
        let p = path(&[
            Step::Key("a".into()),
            Step::Index(0),
            Step::Key("b".into()),
            Step::Index(3),
        ]);
        assert_eq!(p.aad(), "a:b:");
        assert_eq!(p.display(), "a[0].b[3]");
        assert_eq!(Path::default().aad(), "");
    }

    #[test]
    fn mac_bytes_follow_sops_to_bytes() {
        let cases: [(Node, &[u8]); 9] = [
            (Node::Bool(true), b"True"),
            (Node::Bool(false), b"False"),
            (Node::Int(-42), b"-42"),
            (Node::Float(3.0), b"3"),
            (Node::Float(1.5), b"1.5"),
            (Node::Float(1e21), b"1000000000000000000000"),
            (Node::Float(18446744073709551615.0), b"18446744073709552000"),
            (Node::Str("ü".into()), "ü".as_bytes()),
            (
                Node::Time("2001-12-14T21:59:43.1-05:00".into()),
                b"2001-12-14T21:59:43.1-05:00",
            ),
        ];
        for (node, want) in cases {
            assert_eq!(mac_bytes(&node).unwrap().as_slice(), want, "{node:?}");
        }
        assert!(mac_bytes(&Node::Null).is_none());
        assert!(mac_bytes(&Node::List(vec![])).is_none());
    }

    #[test]
    fn booleans_encrypt_and_hash_capitalised() {
        let (bytes, kind) = plaintext_bytes(&Node::Bool(true)).unwrap();
        assert_eq!((bytes.as_slice(), kind), (&b"True"[..], ValueType::Bool));
        assert_eq!(
            scalar_from_plaintext(b"True", ValueType::Bool),
            Some(Node::Bool(true))
        );
        assert_eq!(scalar_from_plaintext(b"yes", ValueType::Bool), None);
    }

    #[test]
    fn plaintexts_parse_by_type() {
        assert_eq!(
            scalar_from_plaintext(b"3", ValueType::Float),
            Some(Node::Float(3.0))
        );
        assert_eq!(
            scalar_from_plaintext(b"+Inf", ValueType::Float),
            Some(Node::Float(f64::INFINITY))
        );
        assert_eq!(scalar_from_plaintext(b"inf", ValueType::Float), None);
        assert_eq!(scalar_from_plaintext(b"3.5", ValueType::Int), None);
        assert_eq!(scalar_from_plaintext(&[0xff], ValueType::Str), None);
        assert_eq!(scalar_from_plaintext(b"x", ValueType::Comment), None);
    }

    #[test]
    fn lastmodified_binds_at_second_precision() {
        assert_eq!(
            rfc3339_seconds("2001-12-14T21:59:43.1-05:00"),
            "2001-12-14T21:59:43-05:00"
        );
        assert_eq!(
            rfc3339_seconds("2026-11-25T00:00:00Z"),
            "2026-11-25T00:00:00Z"
        );
        assert_eq!(rfc3339_seconds("not a date"), "not a date");
    }

    fn rules_with(f: impl FnOnce(&mut Rules)) -> Rules {
        let mut r = Rules::default();
        f(&mut r);
        r
    }

    #[test]
    fn default_suffix_leaves_marked_subtrees_plain() {
        let rules = rules_with(|r| r.unencrypted_suffix = Some("_unencrypted".into()));
        assert!(rules.encrypts(&path(&[Step::Key("root_token".into())])));
        assert!(!rules.encrypts(&path(&[
            Step::Key("meta_unencrypted".into()),
            Step::Key("x".into())
        ])));
    }

    #[test]
    fn encrypted_regex_is_unanchored_and_covers_subtrees() {
        let rules = rules_with(|r| {
            r.encrypted_regex = Some(Rules::compile_regex("^(data|stringData)$").unwrap())
        });
        assert!(rules.encrypts(&path(&[
            Step::Key("data".into()),
            Step::Key("credentials.json".into())
        ])));
        assert!(!rules.encrypts(&path(&[
            Step::Key("metadata".into()),
            Step::Key("name".into())
        ])));
        let loose = rules_with(|r| r.encrypted_regex = Some(Rules::compile_regex("data").unwrap()));
        assert!(loose.encrypts(&path(&[Step::Key("metadata".into())])));
    }

    #[test]
    fn mac_only_encrypted_skips_plain_values_and_changes_the_start() {
        let all = Rules::default();
        let only = rules_with(|r| r.mac_only_encrypted = true);
        let mut a = all.mac();
        a.add(&Node::Str("x".into()), false);
        let mut b = only.mac();
        b.add(&Node::Str("x".into()), false);
        let empty = Rules::default().mac().finish();
        assert_ne!(*a.finish(), *empty);
        assert_ne!(*b.finish(), *empty);
        assert_eq!(empty.len(), 128);
        assert!(empty
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    }
}
