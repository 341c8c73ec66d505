//! Object metadata the server assigns: uids, timestamps, resource versions, ages.
//!
//! Owns the formats (RFC 3339 seconds, UUID v4, kubectl-style ages); callers
//! decide when to assign them.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::jiff::{Timestamp, Unit};
use rand::Rng;

/// The global, strictly increasing resourceVersion counter.
#[derive(Debug)]
pub struct Revisions(AtomicU64);

impl Default for Revisions {
    fn default() -> Self {
        Self(AtomicU64::new(1000))
    }
}

impl Revisions {
    /// A new resourceVersion, greater than every earlier one.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The latest resourceVersion handed out (used by lists).
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A random UUID v4, as Kubernetes uids look.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Now, rounded down to the second.
pub fn now() -> Timestamp {
    let t = Timestamp::now();
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// `2026-01-02T03:04:05Z`.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(Unit::Second)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// kubectl's short age: `45s`, `3m12s`, `5h`, `2d`.
pub fn age(since: Timestamp) -> String {
    let secs = (Timestamp::now().as_second() - since.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_looks_like_uuid_v4() {
        let u = new_uid();
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert_ne!(new_uid(), u);
    }

    #[test]
    fn timestamps_have_second_precision() {
        let s = rfc3339(now());
        assert_eq!(s.len(), 20, "{s}");
        assert!(parse_time(&s).is_some());
    }

    #[test]
    fn revisions_increase() {
        let r = Revisions::default();
        let a = r.next();
        assert!(r.next() > a);
        assert_eq!(r.current(), a + 1);
    }
}
