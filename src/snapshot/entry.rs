//! One snapshot as listed: its name, size and manifest, and how far it can
//! be trusted without reading it.

use crate::snapshot::manifest::Manifest;

/// One snapshot found at a location.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub manifest: Option<Manifest>,
}

/// How far a snapshot can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verification {
    /// Re-hashed: size and sha256 match the manifest.
    Verified,
    /// The manifest is there and the size matches; not re-hashed.
    ManifestOk,
    /// No manifest: a partial upload or not ours.
    NoManifest,
    /// Size or sha256 differ from the manifest.
    Corrupt,
}

impl Entry {
    /// The cheap check: a manifest whose size matches.
    pub fn quick_status(&self) -> Verification {
        match &self.manifest {
            None => Verification::NoManifest,
            Some(m) if m.size != self.size => Verification::Corrupt,
            Some(_) => Verification::ManifestOk,
        }
    }

    /// True when the manifest names cluster `cluster`, or either is unknown
    /// (`None`, or a manifest or credentials without a cluster id).
    pub fn of_cluster(&self, cluster: Option<&str>) -> bool {
        match (cluster, &self.manifest) {
            (Some(c), Some(m)) if !c.is_empty() && !m.cluster_id.is_empty() => m.cluster_id == c,
            _ => true,
        }
    }

    /// Manifest time, for ordering newest first.
    pub fn created(&self) -> Option<jiff::Timestamp> {
        self.manifest.as_ref().and_then(Manifest::created)
    }
}
