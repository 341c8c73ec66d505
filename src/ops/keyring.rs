//! Every key generation that may unseal the cluster right now, in the order
//! to try them, and the token to work with.
//!
//! Owns the choice of candidates: an interrupted operation's new shares
//! first (they become current the moment its verification lands), then the
//! stored current shares, then the history. Loading the documents is the
//! caller's business.
//!
//! # Guarantees
//! Candidates are told apart by what they hold (a fingerprint of their
//! shares), never by their generation number alone, so a stale document
//! that reuses a number cannot shadow the right shares.

use crate::ops::checkpoint::{Checkpoint, Phase};
use crate::ops::credentials::Credentials;
use crate::ops::secret::Secret;
use crate::ops::unseal::KeySet;
use sha2::{Digest, Sha256};

/// One candidate generation.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub generation: u32,
    pub shares: Vec<Secret>,
    pub threshold: usize,
}

/// The candidates, and the credentials whose token commands use.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// The newest credentials: an interrupted operation's next document, or
    /// the stored one. Its root token is the one that works.
    pub current: Credentials,
    candidates: Vec<Candidate>,
}

impl Keyring {
    /// One document and its history.
    pub fn of(credentials: &Credentials) -> Self {
        Self::build(credentials.clone(), [credentials])
    }

    /// From the stored document and the checkpoint. `None` when neither
    /// holds any shares.
    pub fn from_store(
        stored: Option<&Credentials>,
        checkpoint: Option<&Checkpoint>,
    ) -> Option<Self> {
        let pending: Vec<&Credentials> = checkpoint
            .map(Checkpoint::candidate_credentials)
            .unwrap_or_default();
        let current = match checkpoint.map(|c| &c.phase) {
            Some(Phase::RotatePending { next, .. } | Phase::RootTokenPending { next, .. }) => {
                Some(next)
            }
            _ => stored.or_else(|| pending.first().copied()),
        }?;
        Some(Self::build(
            current.clone(),
            pending.into_iter().chain(stored),
        ))
    }

    fn build<'a>(current: Credentials, docs: impl IntoIterator<Item = &'a Credentials>) -> Self {
        let mut ring = Keyring {
            current,
            candidates: Vec::new(),
        };
        let docs: Vec<&Credentials> = docs.into_iter().collect();
        for c in &docs {
            ring.push(c.generation, &c.unseal_keys_b64, c.key_threshold);
        }
        for c in &docs {
            for h in &c.history {
                ring.push(h.generation, &h.unseal_keys_b64, h.key_threshold);
            }
        }
        ring
    }

    fn push(&mut self, generation: u32, shares: &[Secret], threshold: u8) {
        let print = fingerprint(shares);
        if shares.is_empty()
            || self
                .candidates
                .iter()
                .any(|c| fingerprint(&c.shares) == print)
        {
            return;
        }
        self.candidates.push(Candidate {
            generation,
            shares: shares.to_vec(),
            threshold: usize::from(threshold),
        });
    }

    /// The candidates in the order to try them.
    pub fn key_sets(&self) -> Vec<KeySet<'_>> {
        self.candidates
            .iter()
            .map(|c| KeySet {
                generation: c.generation,
                shares: &c.shares,
                threshold: c.threshold,
            })
            .collect()
    }

    pub fn root_token(&self) -> &Secret {
        &self.current.root_token
    }
}

/// SHA-256 over the shares in a fixed order, so that the same set compares
/// equal whatever order it was stored in.
fn fingerprint(shares: &[Secret]) -> [u8; 32] {
    let mut sorted: Vec<&str> = shares.iter().map(Secret::expose).collect();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    for s in sorted {
        h.update(s.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::checkpoint::Checkpoint;

    fn creds(generation: u32, shares: &[&str]) -> Credentials {
        Credentials {
            schema: crate::ops::credentials::CREDENTIALS_SCHEMA,
            seal: Default::default(),
            recovery_keys_b64: vec![],
            root_token: Secret::new(format!("token-{generation}")),
            unseal_keys_b64: shares.iter().map(|s| Secret::new(*s)).collect(),
            key_threshold: 2,
            key_shares: u8::try_from(shares.len()).unwrap(),
            generation,
            cluster_id: String::new(),
            created_at: String::new(),
            server_version: String::new(),
            history: vec![],
        }
    }

    fn generations(ring: &Keyring) -> Vec<u32> {
        ring.key_sets().iter().map(|s| s.generation).collect()
    }

    #[test]
    fn a_pending_rotate_offers_its_new_shares_first() {
        let stored = creds(1, &["a", "b", "c"]);
        let next = creds(2, &["d", "e", "f"]);
        let cp = Checkpoint::new(
            "t",
            Phase::RotatePending {
                previous: stored.clone(),
                next: next.clone(),
                verification_nonce: "n".into(),
            },
        );
        let ring = Keyring::from_store(Some(&stored), Some(&cp)).unwrap();
        assert_eq!(generations(&ring), vec![2, 1]);
        assert_eq!(ring.current.generation, 2);
    }

    #[test]
    fn a_stale_document_with_the_same_number_does_not_shadow_other_shares() {
        // A paused run stored generation 2 with shares that never became current.
        let stored = creds(2, &["x", "y", "z"]);
        let next = creds(2, &["d", "e", "f"]);
        let cp = Checkpoint::new(
            "t",
            Phase::RotatePending {
                previous: creds(1, &["a", "b", "c"]),
                next,
                verification_nonce: "n".into(),
            },
        );
        let ring = Keyring::from_store(Some(&stored), Some(&cp)).unwrap();
        let sets = ring.key_sets();
        assert_eq!(sets.len(), 3, "every distinct set of shares is offered");
        assert_eq!(sets[0].shares[0].expose(), "d");
        assert_eq!(sets[2].shares[0].expose(), "x");
    }

    #[test]
    fn the_same_shares_in_another_order_are_offered_once() {
        let mut stored = creds(2, &["a", "b", "c"]);
        let retired = |generation, shares: &[&str]| crate::ops::credentials::KeyGeneration {
            recovery_keys_b64: vec![],
            generation,
            unseal_keys_b64: shares.iter().map(|s| Secret::new(*s)).collect(),
            key_threshold: 2,
            key_shares: 3,
            retired_at: String::new(),
            root_token: None,
            cluster_id: String::new(),
        };
        stored.history.push(retired(1, &["c", "a", "b"]));
        stored.history.push(retired(1, &["g", "h", "i"]));
        let ring = Keyring::of(&stored);
        assert_eq!(generations(&ring), vec![2, 1]);
        assert_eq!(ring.key_sets()[1].shares[0].expose(), "g");
    }

    #[test]
    fn nothing_stored_is_none() {
        assert!(Keyring::from_store(None, None).is_none());
    }
}
