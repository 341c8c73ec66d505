//! The `ENC[AES256_GCM,...]` value codec.
//!
//! Decides how one scalar is sealed under the document's data key: AES-256-GCM
//! with a 32-byte IV (sops uses Go's `NewGCMWithNonceSize(32)`), a 16-byte tag,
//! standard padded base64, and the value's type written after `type:`. The
//! additional data (the key path) is chosen by the caller; this module only
//! seals and opens.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aes::Aes256;
use aes_gcm::{AeadInPlace, AesGcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore as _;
use zeroize::{Zeroize, Zeroizing};

/// AES-256-GCM with the 32-byte nonce sops uses.
type SopsGcm = AesGcm<Aes256, U32>;

const IV_LEN: usize = 32;
const TAG_LEN: usize = 16;
const PREFIX: &str = "ENC[AES256_GCM,data:";

/// The 32-byte key that encrypts every value of one document. Zeroized on drop;
/// its `Debug` prints nothing of it.
pub(crate) struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh random data key.
    pub(crate) fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        DataKey(key)
    }

    /// Takes the bytes unwrapped from an age stanza; `None` unless exactly 32.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(array)))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn cipher(&self) -> SopsGcm {
        SopsGcm::new(GenericArray::from_slice(self.as_bytes()))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(****)")
    }
}

/// The `type:` of an encrypted value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueType {
    Str,
    Int,
    Float,
    Bool,
    /// A YAML timestamp (sops writes RFC 3339 text).
    Time,
    /// An encrypted YAML comment; never a value.
    Comment,
}

impl ValueType {
    fn as_str(self) -> &'static str {
        match self {
            ValueType::Str => "str",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::Time => "time",
            ValueType::Comment => "comment",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "str" => ValueType::Str,
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "time" => ValueType::Time,
            "comment" => ValueType::Comment,
            _ => return None,
        })
    }
}

/// Why a value could not be opened. Carries no value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not of the `ENC[AES256_GCM,data:..,iv:..,tag:..,type:..]` shape.
    Malformed(&'static str),
    /// The shape is right but the tag does not verify: wrong key, wrong path, or edited.
    Authentication,
}

/// A parsed `ENC[...]` value, still sealed.
#[derive(Debug)]
pub(crate) struct Sealed {
    data: Vec<u8>,
    iv: [u8; IV_LEN],
    tag: [u8; TAG_LEN],
    pub(crate) kind: ValueType,
}

impl Sealed {
    /// Parses the text form.
    pub(crate) fn parse(s: &str) -> Result<Self, OpenError> {
        let body = s
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or(OpenError::Malformed("not of the form ENC[AES256_GCM,...]"))?;
        let (data, rest) = body
            .split_once(",iv:")
            .ok_or(OpenError::Malformed("no iv field"))?;
        let (iv, rest) = rest
            .split_once(",tag:")
            .ok_or(OpenError::Malformed("no tag field"))?;
        let (tag, kind) = rest
            .split_once(",type:")
            .ok_or(OpenError::Malformed("no type field"))?;
        let data = STANDARD
            .decode(data)
            .map_err(|_| OpenError::Malformed("data is not base64"))?;
        let iv: [u8; IV_LEN] = STANDARD
            .decode(iv)
            .map_err(|_| OpenError::Malformed("iv is not base64"))?
            .try_into()
            .map_err(|_| OpenError::Malformed("iv is not 32 bytes"))?;
        let tag: [u8; TAG_LEN] = STANDARD
            .decode(tag)
            .map_err(|_| OpenError::Malformed("tag is not base64"))?
            .try_into()
            .map_err(|_| OpenError::Malformed("tag is not 16 bytes"))?;
        let kind = ValueType::parse(kind).ok_or(OpenError::Malformed("unknown type"))?;
        Ok(Sealed {
            data,
            iv,
            tag,
            kind,
        })
    }

    /// Decrypts with `key`, authenticating `aad`. The plaintext is zeroized on drop.
    pub(crate) fn open(&self, key: &DataKey, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let mut buf = Zeroizing::new(self.data.clone());
        key.cipher()
            .decrypt_in_place_detached(
                GenericArray::from_slice(&self.iv),
                aad,
                &mut buf,
                GenericArray::from_slice(&self.tag),
            )
            .map_err(|_| OpenError::Authentication)?;
        Ok(buf)
    }
}

/// Encrypts `plaintext` as a value of type `kind` under `key` with `aad`, with a fresh IV.
pub(crate) fn seal(key: &DataKey, plaintext: &[u8], aad: &[u8], kind: ValueType) -> String {
    let mut iv = [0u8; IV_LEN];
    rand::rng().fill_bytes(&mut iv);
    let mut buf = Zeroizing::new(plaintext.to_vec());
    // Encryption under a 32-byte nonce cannot fail for inputs below the GCM size
    // limit (64 GiB); a document value never comes near it.
    let tag =
        match key
            .cipher()
            .encrypt_in_place_detached(GenericArray::from_slice(&iv), aad, &mut buf)
        {
            Ok(tag) => tag,
            Err(_) => {
                buf.zeroize();
                GenericArray::default()
            }
        };
    format!(
        "{PREFIX}{},iv:{},tag:{},type:{}]",
        STANDARD.encode(buf.as_slice()),
        STANDARD.encode(iv),
        STANDARD.encode(tag),
        kind.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::from_slice(&[7u8; 32]).unwrap()
    }

    #[test]
    fn round_trip_keeps_bytes_and_type() {
        let k = key();
        let text = seal(&k, "héllo \"q\"".as_bytes(), b"a:b:", ValueType::Str);
        assert!(text.starts_with("ENC[AES256_GCM,data:") && text.ends_with(",type:str]"));
        let sealed = Sealed::parse(&text).unwrap();
        assert_eq!(sealed.kind, ValueType::Str);
        assert_eq!(
            sealed.open(&k, b"a:b:").unwrap().as_slice(),
            "héllo \"q\"".as_bytes()
        );
    }

    #[test]
    fn layout_has_32_byte_iv_16_byte_tag_padded_base64() {
        let text = seal(&key(), b"x", b"k:", ValueType::Int);
        let iv = text
            .split(",iv:")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let tag = text
            .split(",tag:")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert_eq!(STANDARD.decode(iv).unwrap().len(), 32);
        assert_eq!(STANDARD.decode(tag).unwrap().len(), 16);
        assert!(iv.ends_with('='), "32 bytes encode with one pad char");
        assert!(text.ends_with(",type:int]"));
        // Same plaintext twice gives different ciphertexts (fresh IV each time).
        assert_ne!(text, seal(&key(), b"x", b"k:", ValueType::Int));
    }

    #[test]
    fn wrong_aad_or_key_fails_authentication() {
        let text = seal(&key(), b"secret", b"root_token:", ValueType::Str);
        let sealed = Sealed::parse(&text).unwrap();
        assert_eq!(
            sealed.open(&key(), b"other:").unwrap_err(),
            OpenError::Authentication
        );
        let other = DataKey::from_slice(&[8u8; 32]).unwrap();
        assert_eq!(
            sealed.open(&other, b"root_token:").unwrap_err(),
            OpenError::Authentication
        );
    }

    #[test]
    fn malformed_values_are_named() {
        for (input, want) in [
            ("ENC[AES256_GCM,data:AA==]", "no iv field"),
            (
                "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==]",
                "no type field",
            ),
            ("plain", "not of the form ENC[AES256_GCM,...]"),
            (
                "ENC[AES256_GCM,data:!!,iv:AA==,tag:AA==,type:str]",
                "data is not base64",
            ),
            (
                "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]",
                "iv is not 32 bytes",
            ),
        ] {
            assert_eq!(
                Sealed::parse(input).unwrap_err(),
                OpenError::Malformed(want)
            );
        }
        let good = seal(&key(), b"x", b"", ValueType::Str);
        let bad_type = good.replace("type:str", "type:blob");
        assert_eq!(
            Sealed::parse(&bad_type).unwrap_err(),
            OpenError::Malformed("unknown type")
        );
    }

    #[test]
    fn debug_of_data_key_is_redacted() {
        assert_eq!(format!("{:?}", key()), "DataKey(****)");
    }
}
