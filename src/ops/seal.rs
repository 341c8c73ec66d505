//! How a cluster unseals: Shamir shares, or a seal provider (auto-unseal)
//! with recovery keys.
//!
//! Owns the facts that differ between the two: the `sys/init` request and
//! answer, and which `sys/seal-status` fields say which seal a server has.
//! The operations decide what to do with them; on an auto-unseal cluster no
//! operation ever submits anything to `sys/unseal`.

use crate::ops::checkpoint::now_rfc3339;
use crate::ops::credentials::{Credentials, SealKind, CREDENTIALS_SCHEMA};
use crate::ops::node::{NodeError, SealStatus};
use crate::ops::secret::{Secret, SecretAnswer};
use serde::Deserialize;
use serde_json::{json, Value};

impl SealStatus {
    /// The seal this server reports: `type`, or Shamir when the server does
    /// not say (old versions) and has no recovery seal.
    pub fn seal(&self) -> SealKind {
        match (self.seal_type.as_str(), self.recovery_seal) {
            ("" | "shamir", false) => SealKind::Shamir,
            ("", true) => SealKind::Auto("unknown".into()),
            (kind, _) => SealKind::from_type(kind),
        }
    }

    /// The server unseals itself through a provider.
    pub fn auto_unseal(&self) -> bool {
        self.seal().is_auto()
    }
}

/// A server that cannot start because its seal provider failed it, as the
/// last line of its log says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProviderFailure {
    /// The seal stanza's type (`transit`, `awskms`, ...).
    pub seal: String,
    /// The server's own words (the provider's URL and the error; never a
    /// token: the server does not log it).
    pub detail: String,
}

impl std::fmt::Display for ProviderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its {} seal provider failed it at start: {}",
            self.seal, self.detail
        )
    }
}

/// Reads a [`ProviderFailure`] from the tail of a server's log: the server
/// exits right after `Error configuring seal "<type>": <error>` (OpenBao
/// 2.7 and Vault, when the provider is unreachable or refuses), so that
/// line is the last one.
pub fn provider_failure(log_tail: &str) -> Option<ProviderFailure> {
    const MARK: &str = "Error configuring seal \"";
    let last = log_tail.lines().rev().find(|l| !l.trim().is_empty())?;
    let rest = &last[last.find(MARK)? + MARK.len()..];
    let (seal, detail) = rest.split_once('"')?;
    let detail = detail.trim_start_matches(':').trim();
    let detail: String = detail.chars().take(300).collect();
    Some(ProviderFailure {
        seal: seal.to_owned(),
        detail,
    })
}

/// The `sys/init` request body: `secret_*` on Shamir, `recovery_*` on an
/// auto-unseal cluster (never left to the server's default, which is 0 on
/// OpenBao 2.4+).
pub fn init_body(seal: &SealKind, shares: u8, threshold: u8) -> Value {
    match seal {
        SealKind::Shamir => json!({ "secret_shares": shares, "secret_threshold": threshold }),
        SealKind::Auto(_) => {
            json!({ "recovery_shares": shares, "recovery_threshold": threshold })
        }
    }
}

#[derive(Deserialize)]
struct InitAnswer {
    #[serde(default)]
    keys_base64: Vec<Secret>,
    #[serde(default)]
    keys_b64: Vec<Secret>,
    #[serde(default)]
    recovery_keys_base64: Vec<Secret>,
    #[serde(default)]
    recovery_keys_b64: Vec<Secret>,
    root_token: Secret,
}

fn prefer(a: Vec<Secret>, b: Vec<Secret>) -> Vec<Secret> {
    if a.is_empty() {
        b
    } else {
        a
    }
}

/// Credentials of generation `generation` from a `sys/init` answer on a
/// cluster with seal `seal`. `threshold` `None` takes it from the number of
/// keys (a recovered answer whose request is gone). Errors name the problem,
/// never the values.
pub fn credentials_from_init(
    answer: SecretAnswer,
    seal: &SealKind,
    threshold: Option<u8>,
    generation: u32,
    version: &str,
) -> Result<Credentials, NodeError> {
    let r: InitAnswer = answer.parse().map_err(|e| {
        NodeError::Malformed(format!(
            "the sys/init answer lacks keys or root_token (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let shamir = prefer(r.keys_base64, r.keys_b64);
    let recovery = prefer(r.recovery_keys_base64, r.recovery_keys_b64);
    let (unseal, recovery) = match seal {
        SealKind::Shamir => (shamir, recovery),
        // Vault before 1.x put recovery keys under `keys` too.
        SealKind::Auto(_) => (vec![], prefer(recovery, shamir)),
    };
    let count = if seal.is_auto() {
        recovery.len()
    } else {
        unseal.len()
    };
    let shares = u8::try_from(count).unwrap_or(u8::MAX);
    let credentials = Credentials {
        schema: CREDENTIALS_SCHEMA,
        seal: seal.clone(),
        root_token: r.root_token,
        unseal_keys_b64: unseal,
        recovery_keys_b64: if seal.is_auto() { recovery } else { vec![] },
        key_shares: shares,
        key_threshold: if shares == 0 {
            0
        } else {
            threshold.unwrap_or(shares)
        },
        generation,
        cluster_id: String::new(),
        created_at: now_rfc3339(),
        server_version: version.to_owned(),
        history: vec![],
    };
    credentials
        .validate()
        .map_err(|e| NodeError::Malformed(format!("sys/init answered credentials that {e}")))?;
    Ok(credentials)
}

/// Why a snapshot cannot be restored into a cluster because of its seal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealMismatch {
    #[error("the snapshot was taken on a cluster that unseals with its {source_seal} seal, and this cluster unseals with its {target_seal} seal: its data would not unseal here")]
    Kind {
        source_seal: String,
        target_seal: String,
    },
    #[error("this cluster unseals itself through its {seal} seal, and the snapshot comes from another cluster ({source_cluster}): its root key is wrapped by that cluster's seal key, which cannot be compared from here, and data wrapped by another key never unseals (vault#15448). Restore it only into a cluster configured with the same seal key, and say so with --same-seal-key")]
    ForeignKey {
        seal: String,
        source_cluster: String,
    },
}

/// Whether a snapshot taken on a cluster with seal `source_seal` (the
/// manifest's; empty: not recorded) and id `source_cluster` can be restored
/// into a cluster with seal `target` and id `target_cluster`.
///
/// # Guarantees
/// Pure: decided before anything is written. A seal of another kind is
/// always refused. On an auto-unseal target, a snapshot of another cluster
/// is refused unless the user asserts the same seal key; a snapshot of the
/// cluster itself (same id) is taken.
pub fn restore_fits(
    source_seal: &str,
    source_cluster: &str,
    target: &SealKind,
    target_cluster: &str,
    same_seal_key: bool,
) -> Result<(), SealMismatch> {
    if !source_seal.is_empty() && SealKind::from_type(source_seal) != *target {
        return Err(SealMismatch::Kind {
            source_seal: source_seal.to_owned(),
            target_seal: target.name().to_owned(),
        });
    }
    let same_cluster = !source_cluster.is_empty() && source_cluster == target_cluster;
    if target.is_auto() && !same_cluster && !same_seal_key {
        return Err(SealMismatch::ForeignKey {
            seal: target.name().to_owned(),
            source_cluster: if source_cluster.is_empty() {
                "unknown".to_owned()
            } else {
                source_cluster.to_owned()
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn secret(answer: serde_json::Value) -> SecretAnswer {
        SecretAnswer::new(serde_json::to_vec(&answer).unwrap())
    }

    use super::*;

    /// As measured on OpenBao 2.7.2 with its transit provider down.
    #[test]
    fn a_server_failed_by_its_provider_is_read_from_its_last_log_line() {
        let log = "2026-12-02T16:22:14.945Z [INFO]  proxy environment: http_proxy=\"\"\n\
                   Error configuring seal \"transit\": Put \"http://127.1.2.3:8200/v1/transit/encrypt/autounseal\": dial tcp 127.1.2.3:8200: connect: connection refused\n";
        let f = provider_failure(log).expect("a provider failure");
        assert_eq!(f.seal, "transit");
        assert!(
            f.detail.starts_with("Put \"http://127.1.2.3:8200/"),
            "{f:?}"
        );
        assert!(f.detail.ends_with("connection refused"), "{f:?}");
        // A later line means the server went on: not a start failure.
        let later = format!("{log}2026-12-02T16:23:00Z [INFO]  core: vault is unsealed\n");
        assert_eq!(provider_failure(&later), None);
        assert_eq!(provider_failure(""), None);
    }

    #[test]
    fn a_snapshot_restores_only_where_its_seal_fits() {
        let auto = SealKind::Auto("static".into());
        assert_eq!(restore_fits("static", "c1", &auto, "c1", false), Ok(()));
        assert!(matches!(
            restore_fits("static", "c1", &auto, "c2", false),
            Err(SealMismatch::ForeignKey { .. })
        ));
        assert_eq!(restore_fits("static", "c1", &auto, "c2", true), Ok(()));
        assert!(matches!(
            restore_fits("shamir", "c1", &auto, "c1", true),
            Err(SealMismatch::Kind { .. })
        ));
        assert!(matches!(
            restore_fits("static", "c1", &SealKind::Shamir, "c2", true),
            Err(SealMismatch::Kind { .. })
        ));
        // Shamir into Shamir, across clusters, and old manifests: as before.
        assert_eq!(
            restore_fits("shamir", "c1", &SealKind::Shamir, "c2", false),
            Ok(())
        );
        assert_eq!(
            restore_fits("", "c1", &SealKind::Shamir, "c2", false),
            Ok(())
        );
    }

    #[test]
    fn the_seal_comes_from_type_and_recovery_seal() {
        let s: SealStatus = serde_json::from_value(
            json!({"type": "static", "recovery_seal": true, "initialized": false, "sealed": true}),
        )
        .unwrap();
        assert_eq!(s.seal(), SealKind::Auto("static".into()));
        assert!(s.auto_unseal());
        let s: SealStatus =
            serde_json::from_value(json!({"type": "shamir", "sealed": true})).unwrap();
        assert_eq!(s.seal(), SealKind::Shamir);
        let old: SealStatus = serde_json::from_value(json!({"sealed": true})).unwrap();
        assert_eq!(old.seal(), SealKind::Shamir);
    }

    #[test]
    fn init_asks_for_recovery_keys_on_auto_unseal_and_reads_them_back() {
        let auto = SealKind::Auto("static".into());
        assert_eq!(
            init_body(&auto, 5, 3),
            json!({"recovery_shares": 5, "recovery_threshold": 3})
        );
        assert_eq!(
            init_body(&SealKind::Shamir, 5, 3),
            json!({"secret_shares": 5, "secret_threshold": 3})
        );
        let answer = json!({"keys": [], "keys_base64": [], "recovery_keys": ["aa", "bb"],
            "recovery_keys_base64": ["qq", "uw"], "root_token": "s.x"});
        let c = credentials_from_init(secret(answer), &auto, Some(2), 1, "2.7.2").unwrap();
        assert!(c.unseal_keys_b64.is_empty());
        assert_eq!(c.recovery_keys_b64.len(), 2);
        assert_eq!((c.key_shares, c.key_threshold), (2, 2));
        let none = json!({"keys": [], "keys_base64": [], "recovery_keys": [], "recovery_keys_base64": [], "root_token": "s.x"});
        let c = credentials_from_init(secret(none), &auto, Some(3), 1, "").unwrap();
        assert!(c.lacks_recovery_keys());
        assert_eq!((c.key_shares, c.key_threshold), (0, 0));
        let err = credentials_from_init(secret(json!({"keys_base64": ["x"]})), &auto, None, 1, "")
            .unwrap_err();
        assert!(!err.to_string().contains('x') || err.to_string().contains("lacks"));
    }
}
