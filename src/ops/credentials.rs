//! The credentials document: what `sys/init` (or a rekey) returned, plus the
//! facts needed to use it later.
//!
//! Owns the document's shape and its validation. Where it is stored, and in
//! which envelope, is the store's business.

use crate::ops::secret::Secret;
use serde::{Deserialize, Serialize};

/// Unseal shares, root token and the facts that go with them.
///
/// Serialized as the JSON document in data key `credentials.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    pub root_token: Secret,
    pub unseal_keys_b64: Vec<Secret>,
    pub key_threshold: u8,
    pub key_shares: u8,
    /// 1 after init, +1 on every rekey.
    pub generation: u32,
    #[serde(default)]
    pub cluster_id: String,
    pub created_at: String,
    #[serde(default)]
    pub server_version: String,
    /// Earlier key generations, newest first: restoring an older snapshot
    /// needs the shares that were current when it was taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<KeyGeneration>,
}

/// A retired set of unseal shares.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyGeneration {
    pub generation: u32,
    pub unseal_keys_b64: Vec<Secret>,
    pub key_threshold: u8,
    pub key_shares: u8,
    pub retired_at: String,
}

/// Why a credentials document cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidCredentials {
    #[error("it holds no unseal shares")]
    NoShares,
    #[error("its threshold {threshold} is not between 1 and the {shares} shares it holds")]
    Threshold { threshold: u8, shares: usize },
    #[error("its root token is empty")]
    NoRootToken,
    #[error("share {index} is empty")]
    EmptyShare { index: usize },
}

impl Credentials {
    /// Checks the invariants a usable document must hold.
    pub fn validate(&self) -> Result<(), InvalidCredentials> {
        if self.unseal_keys_b64.is_empty() {
            return Err(InvalidCredentials::NoShares);
        }
        let shares = self.unseal_keys_b64.len();
        if self.key_threshold == 0 || usize::from(self.key_threshold) > shares {
            return Err(InvalidCredentials::Threshold {
                threshold: self.key_threshold,
                shares,
            });
        }
        if self.root_token.expose().is_empty() {
            return Err(InvalidCredentials::NoRootToken);
        }
        if let Some(index) = self
            .unseal_keys_b64
            .iter()
            .position(|s| s.expose().is_empty())
        {
            return Err(InvalidCredentials::EmptyShare { index });
        }
        Ok(())
    }

    /// The shares to submit when unsealing: the first `threshold` of them.
    pub fn unseal_shares(&self) -> &[Secret] {
        let n = usize::from(self.key_threshold).min(self.unseal_keys_b64.len());
        &self.unseal_keys_b64[..n]
    }

    /// True when both documents hold the same secrets (compared by fingerprint).
    pub fn same_secrets(&self, other: &Credentials) -> bool {
        self.root_token.same_as(&other.root_token)
            && self.unseal_keys_b64.len() == other.unseal_keys_b64.len()
            && self
                .unseal_keys_b64
                .iter()
                .zip(&other.unseal_keys_b64)
                .all(|(a, b)| a.same_as(b))
            && self.generation == other.generation
    }
}

#[cfg(test)]
pub(crate) fn sample(shares: u8, threshold: u8) -> Credentials {
    Credentials {
        root_token: Secret::new("s.root"),
        unseal_keys_b64: (0..shares)
            .map(|i| Secret::new(format!("share-{i}")))
            .collect(),
        key_threshold: threshold,
        key_shares: shares,
        generation: 1,
        cluster_id: "c1".into(),
        created_at: "2026-11-25T00:00:00Z".into(),
        server_version: "2.7.2".into(),
        history: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_a_threshold_above_the_shares() {
        let c = sample(3, 4);
        assert_eq!(
            c.validate(),
            Err(InvalidCredentials::Threshold {
                threshold: 4,
                shares: 3
            })
        );
        assert!(sample(3, 2).validate().is_ok());
        assert_eq!(sample(3, 2).unseal_shares().len(), 2);
    }

    #[test]
    fn round_trips_as_the_documented_json() {
        let c = sample(2, 1);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["unseal_keys_b64"][1], "share-1");
        assert_eq!(json["key_threshold"], 1);
        let back: Credentials = serde_json::from_value(json).unwrap();
        assert!(back.same_secrets(&c));
    }
}
