//! Secret values: unseal key shares and tokens.
//!
//! Owns the redacting wrappers every secret travels in. `Debug` and `Display`
//! print `****`, memory is zeroized on drop, and the only way to read the value
//! is [`Secret::expose`], so a secret can reach a log line or an error message
//! only through an explicit call that review can find.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

/// A secret string (a key share or a token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The plaintext. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// sha256 of the value, hex, for showing and comparing without revealing it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time equality on the fingerprints.
    pub fn same_as(&self, other: &Secret) -> bool {
        constant_time_eq(
            self.fingerprint().as_bytes(),
            other.fingerprint().as_bytes(),
        )
    }
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// JSON bytes that may hold secrets (a request body, a document), zeroized on drop.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// Serializes `value` to JSON without an intermediate copy outliving this call.
    pub fn json<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(Self::new)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// A server's answer that carries secrets (`sys/init`, a rekey's new shares,
/// a root token generation's OTP), as the raw JSON bytes, zeroized on drop.
/// It is parsed straight into typed structs whose secret fields are
/// [`Secret`]s, so no share or token passes through a `serde_json::Value`.
#[derive(Clone, Default)]
pub struct SecretAnswer(SecretBytes);

/// Vault wraps most answers in `data`; `sys/init` and the unseal-key
/// endpoints answer at the top level.
#[derive(Deserialize)]
struct Enveloped<T> {
    data: Option<T>,
}

impl SecretAnswer {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretAnswer(SecretBytes::new(bytes))
    }

    /// The answer's `data` as `T`, or the whole answer as `T` when it has no
    /// `data`. An empty answer parses as `null`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let bytes = self.0.expose();
        let blank = bytes.iter().all(u8::is_ascii_whitespace);
        let text: &[u8] = if blank { b"null" } else { bytes };
        if let Ok(Enveloped { data: Some(data) }) = serde_json::from_slice::<Enveloped<T>>(text) {
            return Ok(data);
        }
        serde_json::from_slice(text)
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}

impl fmt::Debug for SecretAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<answer of {} secret bytes>", self.0.expose().len())
    }
}

/// A body that submits one key share (`sys/unseal`, a rekey, its
/// verification, a root token generation), serialized straight into
/// zeroizing memory.
pub fn key_body(share: &Secret, nonce: Option<&str>) -> Result<SecretBytes, serde_json::Error> {
    #[derive(Serialize)]
    struct KeyBody<'a> {
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        nonce: Option<&'a str>,
    }
    // Room for any share and nonce, so the buffer never grows (a grown Vec
    // frees its old buffer without zeroizing it).
    let mut out = Vec::with_capacity(share.expose().len() + nonce.map_or(0, str::len) + 64);
    serde_json::to_writer(
        &mut out,
        &KeyBody {
            key: share.expose(),
            nonce,
        },
    )?;
    Ok(SecretBytes::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("s.very-secret");
        assert_eq!(format!("{s:?} {s}"), "**** ****");
        assert_eq!(
            format!("{:?}", SecretBytes::new(b"abc".to_vec())),
            "<3 secret bytes>"
        );
    }

    #[test]
    fn answers_parse_from_data_or_the_top_level() {
        #[derive(Deserialize)]
        struct Keys {
            keys_base64: Vec<Secret>,
        }
        let top = SecretAnswer::new(br#"{"keys_base64":["a"],"root_token":"t"}"#.to_vec());
        assert_eq!(top.parse::<Keys>().unwrap().keys_base64[0].expose(), "a");
        let wrapped =
            SecretAnswer::new(br#"{"data":{"keys_base64":["b"]},"warnings":null}"#.to_vec());
        assert_eq!(
            wrapped.parse::<Keys>().unwrap().keys_base64[0].expose(),
            "b"
        );
        assert!(SecretAnswer::new(b"{}".to_vec()).parse::<Keys>().is_err());
        assert_eq!(format!("{top:?}"), "<answer of 38 secret bytes>");
        let body = key_body(&Secret::new("k1"), Some("n")).unwrap();
        assert_eq!(body.expose(), br#"{"key":"k1","nonce":"n"}"#);
        let body = key_body(&Secret::new("k1"), None).unwrap();
        assert_eq!(body.expose(), br#"{"key":"k1"}"#);
    }

    #[test]
    fn fingerprints_compare_values() {
        let a = Secret::new("a");
        assert!(a.same_as(&Secret::new("a")));
        assert!(!a.same_as(&Secret::new("b")));
        assert_eq!(a.fingerprint().len(), 64);
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
