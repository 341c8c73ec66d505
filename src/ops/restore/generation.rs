//! Which stored key generation a snapshot needs: the credentials whose
//! shares unseal its data (the generation the manifest names, from the
//! current document or its history), and what is stored after a restore so
//! that nothing stored is dropped. Pure functions over credentials.

use super::RestoreError;
use crate::ops::credentials::Credentials;
use crate::ops::secret::Secret;

/// The credentials whose shares unseal data of key generation `generation`
/// taken from cluster `cluster_id` (empty: unknown): the stored document
/// itself, or a copy carrying a retired generation's shares and token.
/// Where two clusters' generations share a number (after a restore with
/// `--credentials`), the one recorded for `cluster_id` wins.
pub fn for_generation(
    stored: &Credentials,
    generation: u32,
    cluster_id: &str,
    object: &str,
) -> Result<Credentials, RestoreError> {
    let current = stored.retire();
    let candidates: Vec<_> = std::iter::once(&current)
        .chain(&stored.history)
        .filter(|g| g.generation == generation)
        .collect();
    let same_cluster = |id: &str| !id.is_empty() && !cluster_id.is_empty() && id == cluster_id;
    let Some(chosen) = candidates
        .iter()
        .find(|g| same_cluster(&g.cluster_id))
        .or_else(|| candidates.first())
    else {
        let newest = stored.newest_generation();
        if generation > newest {
            return Err(RestoreError::NewerGeneration {
                wanted: generation,
                newest,
                object: object.to_owned(),
            });
        }
        return Err(RestoreError::MissingGeneration {
            wanted: generation,
            held: std::iter::once(stored.generation)
                .chain(stored.history.iter().map(|g| g.generation))
                .collect(),
            object: object.to_owned(),
        });
    };
    let mut c = stored.clone();
    c.unseal_keys_b64.clone_from(&chosen.unseal_keys_b64);
    c.recovery_keys_b64.clone_from(&chosen.recovery_keys_b64);
    c.key_threshold = chosen.key_threshold;
    c.key_shares = chosen.key_shares;
    c.generation = chosen.generation;
    if let Some(t) = &chosen.root_token {
        c.root_token = t.clone();
    }
    c.history.clear();
    Ok(c)
}

/// What to store after a restore, or `None` when the stored document is
/// already right. The current credentials become the restored data's
/// (`restored`'s shares and generation, `token` when one works); what was
/// current moves into the history. With `explicit` (`--credentials`) the
/// explicit document becomes current and the whole stored one, history
/// included, moves into the history. Nothing is dropped.
pub fn adopt(
    stored: &Credentials,
    explicit: Option<&Credentials>,
    restored: &Credentials,
    token: Option<&Secret>,
    cluster_id: &str,
) -> Option<Credentials> {
    let base = explicit.unwrap_or(stored);
    let mut next = Credentials {
        schema: crate::ops::credentials::CREDENTIALS_SCHEMA,
        seal: restored.seal.clone(),
        root_token: token
            .cloned()
            .unwrap_or_else(|| restored.root_token.clone()),
        unseal_keys_b64: restored.unseal_keys_b64.clone(),
        recovery_keys_b64: restored.recovery_keys_b64.clone(),
        key_threshold: restored.key_threshold,
        key_shares: restored.key_shares,
        generation: restored.generation,
        cluster_id: if explicit.is_some() || base.cluster_id.is_empty() {
            cluster_id.to_owned()
        } else {
            base.cluster_id.clone()
        },
        created_at: base.created_at.clone(),
        server_version: base.server_version.clone(),
        history: base.history.clone(),
    };
    match explicit {
        Some(_) => {
            next.push_history(std::iter::once(stored.retire()).chain(stored.history.clone()))
        }
        None => next.push_history([stored.retire()]),
    }
    (!next.same_secrets_and_history(stored)).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::credentials::{sample, KeyGeneration};

    fn entry(generation: u32, share: &str, token: Option<&str>, cluster: &str) -> KeyGeneration {
        KeyGeneration {
            recovery_keys_b64: vec![],
            generation,
            unseal_keys_b64: vec![Secret::new(share)],
            key_threshold: 1,
            key_shares: 1,
            retired_at: "2026-11-24T00:00:00Z".into(),
            root_token: token.map(Secret::new),
            cluster_id: cluster.into(),
        }
    }

    #[test]
    fn picks_the_generation_the_snapshot_needs() {
        let mut c = sample(3, 2);
        c.generation = 3;
        c.history = vec![entry(2, "old-0", None, "")];
        assert_eq!(for_generation(&c, 3, "", "s").unwrap().generation, 3);
        let old = for_generation(&c, 2, "", "s").unwrap();
        assert_eq!(old.unseal_shares().len(), 1);
        assert_eq!(old.unseal_keys_b64[0].expose(), "old-0");
        assert_eq!(
            old.root_token.expose(),
            "s.root",
            "no token recorded: the current one"
        );
        assert!(matches!(
            for_generation(&c, 4, "", "s"),
            Err(RestoreError::NewerGeneration {
                wanted: 4,
                newest: 3,
                ..
            })
        ));
        assert!(matches!(
            for_generation(&c, 1, "", "s"),
            Err(RestoreError::MissingGeneration { wanted: 1, .. })
        ));
    }

    #[test]
    fn a_generation_of_the_snapshots_cluster_wins_over_a_same_numbered_one() {
        let mut c = sample(1, 1);
        c.cluster_id = "src".into();
        c.history = vec![entry(1, "target-share", Some("t-target"), "target")];
        let picked = for_generation(&c, 1, "target", "s").unwrap();
        assert_eq!(picked.unseal_keys_b64[0].expose(), "target-share");
        assert_eq!(picked.root_token.expose(), "t-target");
        let picked = for_generation(&c, 1, "src", "s").unwrap();
        assert_eq!(picked.unseal_keys_b64[0].expose(), "share-0");
    }

    #[test]
    fn adopting_an_older_generation_keeps_every_key_and_token() {
        // Generation 2 current with token t2b; generation 1 and an older
        // token of generation 2 in the history.
        let mut stored = sample(1, 1);
        stored.generation = 2;
        stored.root_token = Secret::new("t2b");
        stored.unseal_keys_b64 = vec![Secret::new("g2")];
        stored.history = vec![
            entry(2, "g2", Some("t2a"), "c1"),
            entry(1, "g1", Some("t1"), "c1"),
        ];
        let restored = for_generation(&stored, 1, "c1", "s").unwrap();
        let token = Secret::new("t1");
        let next = adopt(&stored, None, &restored, Some(&token), "c1").unwrap();
        assert_eq!(next.generation, 1);
        assert_eq!(next.unseal_keys_b64[0].expose(), "g1");
        assert_eq!(next.root_token.expose(), "t1");
        let held: Vec<(u32, String)> = next
            .history
            .iter()
            .map(|g| {
                (
                    g.generation,
                    g.root_token.as_ref().unwrap().expose().to_owned(),
                )
            })
            .collect();
        assert_eq!(held, [(2, "t2b".into()), (2, "t2a".into())]);
        // Adopting what is already current changes nothing.
        assert!(adopt(&next, None, &next, Some(&token), "c1").is_none());
    }

    #[test]
    fn explicit_credentials_move_the_whole_replaced_document_into_the_history() {
        let mut stored = sample(1, 1);
        stored.cluster_id = "target".into();
        stored.root_token = Secret::new("t-target");
        stored.history = vec![entry(0, "g0", Some("t0"), "target")];
        let mut explicit = sample(1, 1);
        explicit.unseal_keys_b64 = vec![Secret::new("src-share")];
        explicit.root_token = Secret::new("t-src");
        let next = adopt(
            &stored,
            Some(&explicit),
            &explicit,
            Some(&explicit.root_token),
            "src",
        )
        .unwrap();
        assert_eq!(next.unseal_keys_b64[0].expose(), "src-share");
        assert_eq!(next.cluster_id, "src");
        assert_eq!(next.history.len(), 2, "{:?}", next.history);
        assert_eq!(next.history[0].cluster_id, "target");
        assert_eq!(next.history[0].unseal_keys_b64[0].expose(), "share-0");
        assert_eq!(next.history[1].generation, 0);
    }
}
