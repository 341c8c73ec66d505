//! The manifest: a JSON sidecar `<name>.snap.json` that says what a snapshot
//! is (its sha256 and size) and where it came from (cluster, raft index,
//! server version, key generation). A snapshot without one is not trusted.

use serde::{Deserialize, Serialize};

/// The schema this build writes and reads.
pub const MANIFEST_SCHEMA: u32 = 1;

/// The sidecar's name for a snapshot named `name`.
pub fn manifest_name(name: &str) -> String {
    format!("{name}.json")
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub schema: u32,
    /// The snapshot's file name (next to this manifest).
    pub snapshot: String,
    /// sha256 of the snapshot bytes, lower-case hex, computed while streaming.
    pub sha256: String,
    pub size: u64,
    /// The cluster the snapshot was taken from (`sys/seal-status` cluster_id).
    #[serde(default)]
    pub cluster_id: String,
    /// `sys/leader` raft_committed_index on the active node just before the save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_committed_index: Option<u64>,
    /// The raft term, when the server reports it (OpenBao 2.7 does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_term: Option<u64>,
    #[serde(default)]
    pub server_version: String,
    /// The credentials key generation whose shares unseal this snapshot's data.
    pub generation: u32,
    /// RFC 3339 UTC, when the save finished.
    pub created_at: String,
    /// The pod (the active node) the snapshot came from.
    #[serde(default)]
    pub source_pod: String,
    /// How the source cluster unsealed (`shamir`, `static`, `transit`, ...);
    /// empty in manifests of earlier releases.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seal: String,
    /// The last restore-test of this snapshot (`snapshot verify
    /// --restore-test`), rewritten by each test; absent until one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTestRecord>,
}

/// How a restore-test ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RestoreTestResult {
    /// Restored, and unsealed by the manifest's generation (and the
    /// sentinel read, when one was given).
    Passed,
    /// The snapshot, or the keys it names, failed the test.
    Failed,
    /// The test could not run to a verdict (pod, exec, server start).
    Error,
}

impl RestoreTestResult {
    pub fn name(self) -> &'static str {
        match self {
            RestoreTestResult::Passed => "passed",
            RestoreTestResult::Failed => "failed",
            RestoreTestResult::Error => "error",
        }
    }
}

/// The last restore-test of a snapshot, as its manifest records it. Never
/// holds a secret: the reason is the error's text, which names objects only.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreTestRecord {
    pub result: RestoreTestResult,
    /// RFC 3339 UTC, when the test ended.
    pub at: String,
    /// The key generation the test unsealed with (the manifest's).
    pub generation: u32,
    /// The pod the throwaway server ran in; empty when none was started.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The throwaway server's peak resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// The sentinel path that was read, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<String>,
    pub duration_ms: u64,
}

impl Manifest {
    /// Parses a manifest, refusing other schemas and implausible values.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let schema = value.get("schema").and_then(serde_json::Value::as_u64);
        if schema != Some(u64::from(MANIFEST_SCHEMA)) {
            return Err(format!(
                "unsupported manifest schema {schema:?} (this build reads {MANIFEST_SCHEMA})"
            ));
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| format!("wrong fields: {e}"))?;
        if manifest.sha256.len() != 64 || !manifest.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 is not 64 hex digits".into());
        }
        crate::snapshot::plain_name(&manifest.snapshot).map_err(|e| format!("snapshot: {e}"))?;
        Ok(manifest)
    }

    /// The time the snapshot was taken, for ordering and `--max-age`.
    pub fn created(&self) -> Option<jiff::Timestamp> {
        self.created_at.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            seal: String::new(),
            schema: MANIFEST_SCHEMA,
            snapshot: "openbao-20261125T000000Z.snap".into(),
            sha256: "a".repeat(64),
            size: 4096,
            cluster_id: "c1".into(),
            raft_committed_index: Some(42),
            raft_term: None,
            server_version: "2.7.2".into(),
            generation: 1,
            created_at: "2026-11-25T00:00:00Z".into(),
            source_pod: "openbao-0".into(),
            restore_test: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_other_schemas() {
        let m = sample();
        let bytes = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        let mut v = serde_json::to_value(&m).unwrap();
        v["schema"] = 2.into();
        assert!(Manifest::parse(v.to_string().as_bytes())
            .unwrap_err()
            .contains("schema"));
        let mut v = serde_json::to_value(&m).unwrap();
        v["sha256"] = "zz".into();
        assert!(Manifest::parse(v.to_string().as_bytes()).is_err());
        let mut tested = m.clone();
        tested.restore_test = Some(RestoreTestRecord {
            result: RestoreTestResult::Failed,
            at: "2026-11-25T01:00:00Z".into(),
            generation: 1,
            pod: "openbao-2".into(),
            reason: Some("the server refused the snapshot".into()),
            peak_memory_bytes: Some(64 << 20),
            sentinel: None,
            duration_ms: 4200,
        });
        let bytes = serde_json::to_vec(&tested).unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), tested);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["restore_test"]["result"], "failed");
        for name in ["../x.snap", "/etc/passwd", "a/b.snap", "..", ""] {
            let mut v = serde_json::to_value(&m).unwrap();
            v["snapshot"] = name.into();
            let err = Manifest::parse(v.to_string().as_bytes()).unwrap_err();
            assert!(err.contains("plain"), "{name}: {err}");
        }
    }
}
