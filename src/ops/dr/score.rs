//! The score: which standby a failover promotes.
//!
//! A pure function of a cluster's [`Figures`]; no I/O. Documented order,
//! property-tested below:
//! 1. An unreachable or unhealthy cluster scores 0 and is never chosen
//!    (unhealthy: its API does not answer, too few pods answer for a raft
//!    quorum, a pod is not initialized, or, for a standby, it never
//!    restored the primary's data).
//! 2. Then the freshest data: the smallest raft index difference behind the
//!    primary's newest snapshot (seconds behind it when an index is unknown).
//! 3. Then the health margin: how many pods may fail while a quorum stays.
//! 4. Then latency: the lower p95 of the API probes.
//!
//! Pod CPU and memory ([`PodUsage`]) are reported beside the figures but
//! are not scored: the order above is the issue's, and a busy cluster that
//! holds fresher data is still the better primary.
//!
//! The score packs these into one number so that a larger score is always
//! the better choice, and keeps it below 2^53 so that it survives JSON
//! readers that hold numbers as doubles (`jq`, JavaScript): bits 52..28
//! hold `2^25 - 1 - lag` (lag saturated at `2^25 - 2`, about 33 million
//! raft entries or a year in seconds), bits 27..24 the margin (saturated
//! at 15), bits 23..0 `0xFF_FFFF - p95` in tenths of a millisecond
//! (saturated at about 28 minutes).

use serde::Serialize;

/// What a probe of one cluster found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// The Kubernetes API and at least one server answered.
    pub reachable: bool,
    /// `sys/health` status code of the first server that answered
    /// (200 active, 429 standby, 501 uninitialized, 503 sealed).
    pub health: Option<u16>,
    /// Pods the workload wants.
    pub replicas: u32,
    /// Pods whose server answered its seal status.
    pub answering: u32,
    /// Answering pods that are initialized.
    pub initialized: u32,
    pub sealed: u32,
    /// The active node's pod, when one is unsealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Raft voters (autopilot, or the peer set), when readable (unsealed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voters: Option<u32>,
    /// Autopilot's failure tolerance where reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_tolerance: Option<u32>,
    /// Probe latency in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
    /// For a standby: how far behind the primary's newest snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,
    /// CPU of the cluster's pods, summed, in millicores, from
    /// `metrics.k8s.io`; `null` when the cluster does not serve it. Not scored.
    pub cpu_millicores: Option<f64>,
    /// Resident memory of the cluster's pods, summed, in bytes; `null` when
    /// `metrics.k8s.io` is not served. Not scored.
    pub memory_bytes: Option<u64>,
}

/// What `metrics.k8s.io` reports for a cluster's pods, summed over the pods
/// it reports (each pod's containers added up).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PodUsage {
    pub cpu_millicores: f64,
    pub memory_bytes: u64,
    /// How many pods the figures cover.
    pub pods: u32,
}

impl PodUsage {
    /// The sum of per-pod `(millicores, bytes)`; `None` when there is none.
    pub fn sum(pods: impl IntoIterator<Item = (f64, u64)>) -> Option<PodUsage> {
        pods.into_iter()
            .fold(None, |acc: Option<PodUsage>, (cpu, memory)| {
                let acc = acc.unwrap_or_default();
                Some(PodUsage {
                    cpu_millicores: acc.cpu_millicores + cpu,
                    memory_bytes: acc.memory_bytes.saturating_add(memory),
                    pods: acc.pods + 1,
                })
            })
    }
}

impl Figures {
    /// Records `usage` (or its absence) in the figures.
    pub fn set_usage(&mut self, usage: Option<PodUsage>) {
        self.cpu_millicores = usage.map(|u| u.cpu_millicores);
        self.memory_bytes = usage.map(|u| u.memory_bytes);
    }
}

/// How far a standby's data is behind the primary's newest snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// Seconds between the standby's snapshot and the newest one (RPO age).
    pub rpo_seconds: u64,
    /// Raft index difference, when both manifests carry an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_index_behind: Option<u64>,
    /// Seconds since the standby's snapshot was taken.
    pub age_seconds: u64,
}

/// Why a cluster cannot be chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ineligible {
    Unreachable,
    NoQuorum { answering: u32, replicas: u32 },
    Uninitialized,
    NeverSynced,
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::Unreachable => f.write_str("unreachable"),
            Ineligible::NoQuorum {
                answering,
                replicas,
            } => write!(f, "only {answering} of {replicas} pods answer"),
            Ineligible::Uninitialized => f.write_str("a pod is not initialized"),
            Ineligible::NeverSynced => f.write_str("never synced from the primary"),
        }
    }
}

/// Pods that may fail while a quorum stays: autopilot's answer where
/// reported, else `(n - 1) / 2` over the pods that answer.
pub fn margin(f: &Figures) -> u32 {
    f.failure_tolerance
        .unwrap_or_else(|| f.initialized.saturating_sub(1) / 2)
}

/// Why `f` cannot be chosen, if it cannot.
pub fn ineligible(f: &Figures) -> Option<Ineligible> {
    if !f.reachable || f.answering == 0 {
        return Some(Ineligible::Unreachable);
    }
    let quorum = f.replicas / 2 + 1;
    if f.answering < quorum {
        return Some(Ineligible::NoQuorum {
            answering: f.answering,
            replicas: f.replicas,
        });
    }
    if f.initialized < f.answering {
        return Some(Ineligible::Uninitialized);
    }
    if f.lag.is_none() {
        return Some(Ineligible::NeverSynced);
    }
    None
}

/// The largest score: 2^53 - 1, the largest integer a JSON reader that
/// holds numbers as doubles reads exactly.
pub const MAX_SCORE: u64 = (1 << 53) - 1;

/// Freshness bits: `FRESHEST - lag`.
const FRESHEST: u64 = (1 << 25) - 1;

/// The score of a standby with figures `f`; 0 when it cannot be chosen,
/// at most [`MAX_SCORE`].
pub fn score(f: &Figures) -> u64 {
    if ineligible(f).is_some() {
        return 0;
    }
    let lag = f
        .lag
        .as_ref()
        .map_or(FRESHEST, |l| l.raft_index_behind.unwrap_or(l.rpo_seconds));
    let freshness = FRESHEST - lag.min(FRESHEST - 1);
    let margin = u64::from(margin(f).min(15));
    let tenths = f.latency_p95_ms.map_or(0xFF_FFFF, |ms| {
        (ms.max(0.0) * 10.0).round().min(f64::from(0xFF_FFFF)) as u64
    });
    let speed = 0xFF_FFFF - tenths;
    (freshness << 28) | (margin << 24) | speed
}

/// The best of `candidates` (name, figures): the highest score above 0;
/// ties go to the first named.
pub fn choose<'a>(candidates: &[(&'a str, &Figures)]) -> Option<&'a str> {
    let mut best: Option<(&str, u64)> = None;
    for (name, f) in candidates {
        let s = score(f);
        if s > 0 && best.is_none_or(|(_, b)| s > b) {
            best = Some((name, s));
        }
    }
    best.map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn healthy(index_behind: u64, margin: u32, p95: f64) -> Figures {
        Figures {
            reachable: true,
            health: Some(503),
            replicas: 3,
            answering: 3,
            initialized: 3,
            sealed: 3,
            failure_tolerance: Some(margin),
            latency_p50_ms: Some(p95 / 2.0),
            latency_p95_ms: Some(p95),
            lag: Some(Lag {
                rpo_seconds: index_behind,
                raft_index_behind: Some(index_behind),
                age_seconds: 0,
            }),
            ..Figures::default()
        }
    }

    fn figures() -> impl Strategy<Value = Figures> {
        (
            any::<bool>(),
            0u32..5,
            0u32..5,
            0u32..5,
            proptest::option::of(0u32..4),
            proptest::option::of(0.0f64..5_000.0),
            proptest::option::of((0u64..u64::MAX, proptest::option::of(0u64..u64::MAX))),
        )
            .prop_map(
                |(reachable, replicas, answering, initialized, ft, p95, lag)| Figures {
                    reachable,
                    replicas,
                    answering: answering.min(replicas),
                    initialized: initialized.min(answering.min(replicas)),
                    failure_tolerance: ft,
                    latency_p95_ms: p95,
                    lag: lag.map(|(rpo, idx)| Lag {
                        rpo_seconds: rpo,
                        raft_index_behind: idx,
                        age_seconds: rpo,
                    }),
                    ..Figures::default()
                },
            )
    }

    #[test]
    fn usage_sums_pods_and_is_none_without_any() {
        assert_eq!(PodUsage::sum([]), None);
        let u = PodUsage::sum([(20.0, 1024), (5.5, 2048)]).unwrap();
        assert_eq!((u.cpu_millicores, u.memory_bytes, u.pods), (25.5, 3072, 2));
    }

    proptest! {
        /// Pod usage is reported, never scored.
        #[test]
        fn usage_does_not_change_the_score(f in figures(), cpu in 0.0f64..64_000.0, memory in 0u64..u64::MAX) {
            let mut busy = f.clone();
            busy.set_usage(Some(PodUsage { cpu_millicores: cpu, memory_bytes: memory, pods: 1 }));
            prop_assert_eq!(score(&busy), score(&f));
        }

        /// An unreachable or unhealthy cluster is never chosen, whatever the others are.
        #[test]
        fn the_ineligible_are_never_chosen(all in proptest::collection::vec(figures(), 1..6)) {
            let names: Vec<String> = (0..all.len()).map(|i| format!("c{i}")).collect();
            let candidates: Vec<(&str, &Figures)> =
                names.iter().map(String::as_str).zip(all.iter()).collect();
            match choose(&candidates) {
                Some(chosen) => {
                    let i = names.iter().position(|n| n == chosen).unwrap();
                    prop_assert!(ineligible(&all[i]).is_none());
                    for f in &all {
                        prop_assert!(score(f) <= score(&all[i]));
                    }
                }
                None => prop_assert!(all.iter().all(|f| ineligible(f).is_some())),
            }
            for f in &all {
                prop_assert_eq!(score(f) == 0, ineligible(f).is_some());
                prop_assert!(score(f) <= MAX_SCORE);
            }
        }

        /// Fresher data wins over any margin and latency.
        #[test]
        fn freshness_comes_first(a in 0u64..1_000_000, d in 1u64..1_000_000,
                                 ma in 0u32..8, mb in 0u32..8,
                                 pa in 0.0f64..10_000.0, pb in 0.0f64..10_000.0) {
            let fresher = healthy(a, ma, pa);
            let staler = healthy(a + d, mb, pb);
            prop_assert!(score(&fresher) > score(&staler));
            prop_assert_eq!(choose(&[("s", &staler), ("f", &fresher)]), Some("f"));
        }

        /// At equal freshness the larger margin wins over any latency.
        #[test]
        fn then_margin(lag in 0u64..1_000_000, m in 0u32..8, pa in 0.0f64..10_000.0, pb in 0.0f64..10_000.0) {
            prop_assert!(score(&healthy(lag, m + 1, pa)) > score(&healthy(lag, m, pb)));
        }

        /// At equal freshness and margin the faster cluster wins.
        #[test]
        fn then_latency(lag in 0u64..1_000_000, m in 0u32..8, p in 0.0f64..1_000.0, d in 0.2f64..1_000.0) {
            prop_assert!(score(&healthy(lag, m, p)) > score(&healthy(lag, m, p + d)));
        }
    }

    /// The best possible standby still scores a number JSON carries exactly.
    #[test]
    fn the_best_score_is_json_safe() {
        let best = score(&healthy(0, 99, 0.0));
        assert_eq!(best, MAX_SCORE);
        let json = serde_json::to_string(&serde_json::json!({ "score": best })).unwrap();
        let as_double: f64 = serde_json::from_str::<serde_json::Value>(&json).unwrap()["score"]
            .as_f64()
            .unwrap();
        assert_eq!(as_double as u64, best);
    }

    #[test]
    fn a_standby_that_never_synced_or_lacks_a_quorum_is_ineligible() {
        let mut f = healthy(0, 1, 1.0);
        f.lag = None;
        assert_eq!(ineligible(&f), Some(Ineligible::NeverSynced));
        let mut f = healthy(0, 1, 1.0);
        f.answering = 1;
        f.initialized = 1;
        assert_eq!(
            ineligible(&f).map(|i| i.to_string()).as_deref(),
            Some("only 1 of 3 pods answer")
        );
        assert_eq!(
            ineligible(&Figures::default()),
            Some(Ineligible::Unreachable)
        );
    }
}
