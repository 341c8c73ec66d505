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
    fn fingerprints_compare_values() {
        let a = Secret::new("a");
        assert!(a.same_as(&Secret::new("a")));
        assert!(!a.same_as(&Secret::new("b")));
        assert_eq!(a.fingerprint().len(), 64);
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
