//! The credentials document: what `sys/init` (or a rekey) returned, plus the
//! facts needed to use it later.
//!
//! Owns the document's shape and its validation. Where it is stored, and in
//! which envelope, is the store's business.

use crate::ops::secret::Secret;
use serde::{Deserialize, Serialize};

/// The schema this build writes. Schema 1 (no `schema` field) is every
/// document of earlier releases: Shamir only. Schema 2 adds `seal` and
/// `recovery_keys_b64`; a schema-1 document loads as a Shamir one.
pub const CREDENTIALS_SCHEMA: u32 = 2;

fn schema_1() -> u32 {
    1
}

/// Every document this build writes is in its schema, whatever it was read as.
fn write_current_schema<S: serde::Serializer>(_: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(CREDENTIALS_SCHEMA)
}

/// How the cluster unseals, as `sys/seal-status` names it (`type`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum SealKind {
    /// Unseal shares submitted to `sys/unseal`.
    #[default]
    Shamir,
    /// The server unseals itself through a provider (`static`, `transit`,
    /// `awskms`, `pkcs11`, ...); `sys/init` returns recovery keys instead of
    /// unseal shares.
    Auto(String),
}

impl SealKind {
    /// From `sys/seal-status`'s `type` (`shamir` or the provider's name).
    pub fn from_type(kind: &str) -> Self {
        match kind {
            "" | "shamir" => SealKind::Shamir,
            other => SealKind::Auto(other.to_owned()),
        }
    }

    pub fn is_auto(&self) -> bool {
        matches!(self, SealKind::Auto(_))
    }

    fn is_shamir(&self) -> bool {
        !self.is_auto()
    }

    /// `shamir` or the provider's name.
    pub fn name(&self) -> &str {
        match self {
            SealKind::Shamir => "shamir",
            SealKind::Auto(kind) => kind,
        }
    }
}

impl From<String> for SealKind {
    fn from(s: String) -> Self {
        SealKind::from_type(&s)
    }
}

impl From<SealKind> for String {
    fn from(s: SealKind) -> Self {
        s.name().to_owned()
    }
}

impl std::fmt::Display for SealKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Unseal shares (or, on an auto-unseal cluster, recovery keys), root token
/// and the facts that go with them.
///
/// Serialized as the JSON document in data key `credentials.json`.
///
/// On an auto-unseal cluster (`seal` is not `shamir`) `unseal_keys_b64` is
/// empty, the recovery keys are in `recovery_keys_b64`, and `key_shares` /
/// `key_threshold` describe the recovery keys, as `sys/seal-status` reports
/// them there (`n`, `t`). Both are 0 when the cluster has no recovery keys
/// (`init --recovery-shares 0`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// 1 for documents of earlier releases (no field), [`CREDENTIALS_SCHEMA`] when written now.
    #[serde(default = "schema_1", serialize_with = "write_current_schema")]
    pub schema: u32,
    /// `shamir` when absent.
    #[serde(default, skip_serializing_if = "SealKind::is_shamir")]
    pub seal: SealKind,
    pub root_token: Secret,
    #[serde(default)]
    pub unseal_keys_b64: Vec<Secret>,
    /// The recovery keys of an auto-unseal cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery_keys_b64: Vec<Secret>,
    pub key_threshold: u8,
    pub key_shares: u8,
    /// 1 after init, +1 on every rekey.
    pub generation: u32,
    #[serde(default)]
    pub cluster_id: String,
    pub created_at: String,
    #[serde(default)]
    pub server_version: String,
    /// Earlier key generations and root tokens, newest first: restoring an
    /// older snapshot needs the shares, and a token, that were current when
    /// it was taken. A root token rotation keeps the generation number, so
    /// one generation can appear several times, once per retired token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<KeyGeneration>,
}

/// A retired set of unseal shares, with the root token that went with them.
///
/// `root_token` and `cluster_id` were added after the first release: a
/// document written before has neither, and loads with `None` and `""`
/// (additive fields with defaults: every older document still loads, so the
/// document needs no schema number and no migration).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyGeneration {
    pub generation: u32,
    #[serde(default)]
    pub unseal_keys_b64: Vec<Secret>,
    /// The recovery keys of this generation (auto-unseal clusters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery_keys_b64: Vec<Secret>,
    pub key_threshold: u8,
    pub key_shares: u8,
    pub retired_at: String,
    /// The root token that was current with these shares, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_token: Option<Secret>,
    /// The cluster these shares belonged to, when known: after a restore with
    /// `--credentials` the history holds generations of two clusters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
}

impl KeyGeneration {
    /// Same generation, shares and token (compared by fingerprint).
    pub fn same_secrets(&self, other: &KeyGeneration) -> bool {
        self.generation == other.generation
            && same_shares(&self.unseal_keys_b64, &other.unseal_keys_b64)
            && same_shares(&self.recovery_keys_b64, &other.recovery_keys_b64)
            && match (&self.root_token, &other.root_token) {
                (Some(a), Some(b)) => a.same_as(b),
                (None, None) => true,
                _ => false,
            }
    }
}

/// Two share lists hold the same secrets in the same order (by fingerprint).
pub fn same_shares(a: &[Secret], b: &[Secret]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
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
    #[error("it is for an auto-unseal cluster ({seal}) but holds unseal shares")]
    SharesOnAutoUnseal { seal: String },
    #[error("it holds {have} recovery keys but says {shares}")]
    RecoveryKeyCount { have: usize, shares: u8 },
}

impl Credentials {
    /// Checks the invariants a usable document must hold.
    pub fn validate(&self) -> Result<(), InvalidCredentials> {
        if self.seal.is_auto() {
            return self.validate_auto();
        }
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

    /// An auto-unseal document: recovery keys (possibly none) and a root token.
    fn validate_auto(&self) -> Result<(), InvalidCredentials> {
        if !self.unseal_keys_b64.is_empty() {
            return Err(InvalidCredentials::SharesOnAutoUnseal {
                seal: self.seal.name().to_owned(),
            });
        }
        if self.root_token.expose().is_empty() {
            return Err(InvalidCredentials::NoRootToken);
        }
        let have = self.recovery_keys_b64.len();
        if have != usize::from(self.key_shares) {
            return Err(InvalidCredentials::RecoveryKeyCount {
                have,
                shares: self.key_shares,
            });
        }
        if have > 0 && (self.key_threshold == 0 || usize::from(self.key_threshold) > have) {
            return Err(InvalidCredentials::Threshold {
                threshold: self.key_threshold,
                shares: have,
            });
        }
        if let Some(index) = self
            .recovery_keys_b64
            .iter()
            .position(|s| s.expose().is_empty())
        {
            return Err(InvalidCredentials::EmptyShare { index });
        }
        Ok(())
    }

    /// The keys that authorise a rekey, a root token generation or a probe:
    /// the unseal shares on Shamir, the recovery keys on auto-unseal; the
    /// first `threshold` of them.
    pub fn authorising_keys(&self) -> &[Secret] {
        let keys = if self.seal.is_auto() {
            &self.recovery_keys_b64
        } else {
            &self.unseal_keys_b64
        };
        let n = usize::from(self.key_threshold).min(keys.len());
        &keys[..n]
    }

    /// An auto-unseal cluster initialized without recovery keys.
    pub fn lacks_recovery_keys(&self) -> bool {
        self.seal.is_auto() && self.recovery_keys_b64.is_empty()
    }

    /// The shares to submit when unsealing: the first `threshold` of them.
    pub fn unseal_shares(&self) -> &[Secret] {
        let n = usize::from(self.key_threshold).min(self.unseal_keys_b64.len());
        &self.unseal_keys_b64[..n]
    }

    /// This document's current shares and root token as a history entry.
    pub fn retire(&self) -> KeyGeneration {
        KeyGeneration {
            generation: self.generation,
            unseal_keys_b64: self.unseal_keys_b64.clone(),
            recovery_keys_b64: self.recovery_keys_b64.clone(),
            key_threshold: self.key_threshold,
            key_shares: self.key_shares,
            retired_at: crate::ops::checkpoint::now_rfc3339(),
            root_token: Some(self.root_token.clone()),
            cluster_id: self.cluster_id.clone(),
        }
    }

    /// The highest generation number this document knows (current or
    /// history): a rotate after restoring an older generation numbers its
    /// new shares above every one already used.
    pub fn newest_generation(&self) -> u32 {
        self.history
            .iter()
            .map(|g| g.generation)
            .chain(std::iter::once(self.generation))
            .max()
            .unwrap_or(self.generation)
    }

    /// Puts `entries` in front of the history, newest first, then drops
    /// exact duplicates and entries that are the current shares and token.
    /// Nothing else is dropped.
    pub fn push_history(&mut self, entries: impl IntoIterator<Item = KeyGeneration>) {
        let current = self.retire();
        let mut merged: Vec<KeyGeneration> = Vec::new();
        for g in entries.into_iter().chain(std::mem::take(&mut self.history)) {
            if g.same_secrets(&current) || merged.iter().any(|m| m.same_secrets(&g)) {
                continue;
            }
            merged.push(g);
        }
        self.history = merged;
    }

    /// Keeps the history entries of the `keep` newest distinct generations
    /// (a generation with several retired root tokens counts once).
    pub fn truncate_history(&mut self, keep: usize) {
        let mut seen: Vec<u32> = Vec::new();
        self.history.retain(|g| {
            if !seen.contains(&g.generation) {
                seen.push(g.generation);
            }
            seen.iter()
                .position(|s| *s == g.generation)
                .is_some_and(|i| i < keep)
        });
    }

    /// Every root token this document holds, current first, then the
    /// history's, newest first, without duplicates; tokens retired with
    /// `generation` come before the others.
    pub fn root_tokens_for(&self, generation: u32) -> Vec<Secret> {
        let mut ordered: Vec<&Secret> = Vec::new();
        let history_tokens = |want: bool| {
            self.history
                .iter()
                .filter(move |g| (g.generation == generation) == want)
                .filter_map(|g| g.root_token.as_ref())
        };
        let current_first = self.generation == generation;
        if current_first {
            ordered.push(&self.root_token);
        }
        ordered.extend(history_tokens(true));
        if !current_first {
            ordered.push(&self.root_token);
        }
        ordered.extend(history_tokens(false));
        let mut out: Vec<Secret> = Vec::new();
        for t in ordered {
            if !out.iter().any(|o| o.same_as(t)) {
                out.push(t.clone());
            }
        }
        out
    }

    /// True when both documents hold the same secrets (compared by fingerprint).
    pub fn same_secrets(&self, other: &Credentials) -> bool {
        self.root_token.same_as(&other.root_token)
            && same_shares(&self.unseal_keys_b64, &other.unseal_keys_b64)
            && same_shares(&self.recovery_keys_b64, &other.recovery_keys_b64)
            && self.generation == other.generation
    }

    /// True when both documents hold the same secrets, history included.
    pub fn same_secrets_and_history(&self, other: &Credentials) -> bool {
        self.same_secrets(other)
            && self.history.len() == other.history.len()
            && self
                .history
                .iter()
                .zip(&other.history)
                .all(|(a, b)| a.same_secrets(b))
    }
}

#[cfg(test)]
pub(crate) fn sample(shares: u8, threshold: u8) -> Credentials {
    Credentials {
        schema: CREDENTIALS_SCHEMA,
        seal: SealKind::Shamir,
        root_token: Secret::new("s.root"),
        unseal_keys_b64: (0..shares)
            .map(|i| Secret::new(format!("share-{i}")))
            .collect(),
        recovery_keys_b64: vec![],
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

    fn retired(generation: u32, token: &str) -> KeyGeneration {
        let mut c = sample(2, 1);
        c.generation = generation;
        c.root_token = Secret::new(token);
        c.retire()
    }

    #[test]
    fn a_document_without_history_tokens_still_loads() {
        let old = r#"{"root_token":"s.r","unseal_keys_b64":["a"],"key_threshold":1,"key_shares":1,
            "generation":2,"created_at":"x","history":[{"generation":1,"unseal_keys_b64":["b"],
            "key_threshold":1,"key_shares":1,"retired_at":"y"}]}"#;
        let c: Credentials = serde_json::from_str(old).unwrap();
        assert_eq!(c.history[0].root_token, None);
        assert_eq!(c.history[0].cluster_id, "");
        let again = serde_json::to_value(&c).unwrap();
        assert!(again["history"][0].get("root_token").is_none(), "{again}");
    }

    #[test]
    fn history_keeps_every_token_once_and_orders_the_generation_first() {
        let mut c = sample(2, 1);
        c.generation = 3;
        c.root_token = Secret::new("t3");
        c.push_history([retired(2, "t2"), retired(1, "t1b"), retired(1, "t1a")]);
        c.push_history([retired(2, "t2"), retired(3, "t3")]);
        assert_eq!(c.history.len(), 3, "duplicates and the current are dropped");
        let tokens: Vec<String> = c
            .root_tokens_for(1)
            .iter()
            .map(|t| t.expose().to_owned())
            .collect();
        assert_eq!(tokens, ["t1b", "t1a", "t3", "t2"]);
        assert_eq!(c.newest_generation(), 3);
        c.truncate_history(1);
        assert_eq!(c.history.len(), 1);
        assert_eq!(c.history[0].generation, 2);
    }

    #[test]
    fn an_auto_unseal_document_holds_recovery_keys_and_round_trips() {
        let mut c = sample(0, 0);
        c.seal = SealKind::Auto("static".into());
        assert!(c.validate().is_ok(), "no recovery keys is valid");
        assert!(c.lacks_recovery_keys());
        c.recovery_keys_b64 = vec![Secret::new("r0"), Secret::new("r1"), Secret::new("r2")];
        assert_eq!(
            c.validate(),
            Err(InvalidCredentials::RecoveryKeyCount { have: 3, shares: 0 })
        );
        c.key_shares = 3;
        c.key_threshold = 2;
        assert!(c.validate().is_ok());
        assert_eq!(c.authorising_keys().len(), 2);
        assert!(c.unseal_shares().is_empty());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["seal"], "static");
        assert_eq!(json["schema"], CREDENTIALS_SCHEMA);
        assert_eq!(json["recovery_keys_b64"][2], "r2");
        assert!(format!("{c:?}").contains("****") && !format!("{c:?}").contains("r2"));
        let back: Credentials = serde_json::from_value(json).unwrap();
        assert!(back.same_secrets(&c));
        let mut other = back.clone();
        other.recovery_keys_b64[0] = Secret::new("x");
        assert!(!other.same_secrets(&c), "recovery keys are compared");
        c.unseal_keys_b64 = vec![Secret::new("u")];
        assert!(matches!(
            c.validate(),
            Err(InvalidCredentials::SharesOnAutoUnseal { .. })
        ));
    }

    #[test]
    fn a_schema_1_document_loads_as_shamir() {
        let old = r#"{"root_token":"s.r","unseal_keys_b64":["a"],"key_threshold":1,"key_shares":1,
            "generation":1,"created_at":"x"}"#;
        let c: Credentials = serde_json::from_str(old).unwrap();
        assert_eq!((c.schema, &c.seal), (1, &SealKind::Shamir));
        assert!(c.recovery_keys_b64.is_empty());
        let json = serde_json::to_value(&c).unwrap();
        assert!(json.get("seal").is_none() && json.get("recovery_keys_b64").is_none());
        assert_eq!(
            json["schema"], CREDENTIALS_SCHEMA,
            "written in this build's schema"
        );
    }

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
