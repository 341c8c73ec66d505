//! Retention: which snapshots a save may prune.
//!
//! Owns the rule only; listing, verifying and deleting are the caller's. The
//! rule: keep the `keep` newest snapshots that have a manifest, drop those
//! older than `max_age`, never touch the newest verified snapshot (even when
//! it falls outside both limits), and never touch a snapshot without a
//! manifest (it may be an upload in progress by another run).

use std::time::Duration;

/// One candidate, newest first in the slice handed to [`plan`].
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub created: Option<jiff::Timestamp>,
    pub has_manifest: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    pub keep: Option<usize>,
    pub max_age: Option<Duration>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.keep.is_none() && self.max_age.is_none()
    }
}

/// The names to delete. `candidates` is newest first; `protected` is the
/// newest verified snapshot's name.
pub fn plan(
    candidates: &[Candidate],
    policy: Policy,
    protected: Option<&str>,
    now: jiff::Timestamp,
) -> Vec<String> {
    let mut doomed = Vec::new();
    for (rank, c) in candidates.iter().filter(|c| c.has_manifest).enumerate() {
        if Some(c.name.as_str()) == protected {
            continue;
        }
        let too_many = policy.keep.is_some_and(|k| rank >= k);
        // Compared whole: `--max-age 0s` drops anything older than now.
        let too_old = match (policy.max_age, c.created) {
            (Some(max), Some(t)) => {
                jiff::SignedDuration::try_from(max).is_ok_and(|max| now.duration_since(t) > max)
            }
            _ => false,
        };
        if too_many || too_old {
            doomed.push(c.name.clone());
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn c(name: &str, secs: i64) -> Candidate {
        Candidate {
            name: name.into(),
            created: Some(at(secs)),
            has_manifest: true,
        }
    }

    #[test]
    fn keeps_exactly_n_newest() {
        let list = [c("e", 5), c("d", 4), c("c", 3), c("b", 2), c("a", 1)];
        let doomed = plan(
            &list,
            Policy {
                keep: Some(2),
                max_age: None,
            },
            Some("e"),
            at(10),
        );
        assert_eq!(doomed, ["c", "b", "a"]);
    }

    #[test]
    fn never_deletes_the_newest_verified_even_outside_the_limits() {
        // The two newest are corrupt; the newest verified is the third.
        let list = [c("e", 5), c("d", 4), c("c", 3), c("b", 2)];
        let doomed = plan(
            &list,
            Policy {
                keep: Some(1),
                max_age: Some(Duration::from_secs(1)),
            },
            Some("c"),
            at(100),
        );
        assert_eq!(doomed, ["e", "d", "b"]);
    }

    #[test]
    fn leaves_snapshots_without_a_manifest_alone() {
        let mut partial = c("x", 9);
        partial.has_manifest = false;
        let list = [partial, c("b", 2), c("a", 1)];
        let doomed = plan(
            &list,
            Policy {
                keep: Some(1),
                max_age: None,
            },
            Some("b"),
            at(10),
        );
        assert_eq!(doomed, ["a"]);
    }

    #[test]
    fn max_age_zero_drops_a_snapshot_taken_a_moment_ago() {
        let moment = jiff::Timestamp::from_millisecond(1_800_000_000_000).unwrap();
        let list = [
            Candidate {
                name: "new".into(),
                created: Some(moment),
                has_manifest: true,
            },
            Candidate {
                name: "old".into(),
                created: Some(moment - jiff::SignedDuration::from_millis(900)),
                has_manifest: true,
            },
        ];
        let policy = Policy {
            keep: None,
            max_age: Some(Duration::ZERO),
        };
        assert_eq!(plan(&list, policy, Some("new"), moment), ["old"]);
        // One second is one second: 900 ms is not older than it.
        let policy = Policy {
            keep: None,
            max_age: Some(Duration::from_secs(1)),
        };
        assert!(plan(&list, policy, Some("new"), moment).is_empty());
    }
}
