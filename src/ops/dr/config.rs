//! The DR group file (`--config dr.yaml`): which clusters form the group,
//! how each is reached, and where the snapshots and the DR state live.
//!
//! Owns parsing and validating it, purely: no cluster is contacted here.
//! `role` is only the starting point; once the DR state exists it decides
//! who is primary.

use serde::Deserialize;

pub const API_VERSION: &str = "kubectl-vault.io/v1alpha1";
pub const KIND: &str = "DRGroup";

/// A cluster's role as the file states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Standby,
}

/// One member cluster: a kube context, a namespace and a StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub context: String,
    pub namespace: String,
    pub role: Role,
    /// Found by the server pods' labels when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<String>,
}

/// A validated DR group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrGroup {
    pub name: String,
    /// A folder or `s3://bucket/prefix/`: the primary's snapshots and the DR state.
    pub snapshots: String,
    pub clusters: Vec<ClusterSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    snapshots: String,
    clusters: Vec<ClusterSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file} is not a DRGroup document: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file} has apiVersion {found}; this build reads {API_VERSION}")]
    ApiVersion { file: String, found: String },
    #[error("{file} has kind {found}; expected {KIND}")]
    Kind { file: String, found: String },
    #[error("{file}: {field} is empty")]
    Empty { file: String, field: String },
    #[error("{file} names cluster {name} twice")]
    Duplicate { file: String, name: String },
    #[error("{file} must name exactly one cluster with role primary, found {found}")]
    Primaries { file: String, found: usize },
    #[error("{file} names no cluster with role standby")]
    NoStandby { file: String },
}

impl DrGroup {
    /// Parses and validates the YAML text of `file` (named in errors).
    pub fn parse(text: &str, file: &str) -> Result<DrGroup, ConfigError> {
        let doc: Document = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        let file = file.to_owned();
        if doc.api_version != API_VERSION {
            return Err(ConfigError::ApiVersion {
                file,
                found: doc.api_version,
            });
        }
        if doc.kind != KIND {
            return Err(ConfigError::Kind {
                file,
                found: doc.kind,
            });
        }
        let empty = |field: String| ConfigError::Empty {
            file: file.clone(),
            field,
        };
        if doc.metadata.name.trim().is_empty() {
            return Err(empty("metadata.name".into()));
        }
        if doc.spec.snapshots.trim().is_empty() {
            return Err(empty("spec.snapshots".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in doc.spec.clusters.iter().enumerate() {
            for (field, value) in [
                ("name", &c.name),
                ("context", &c.context),
                ("namespace", &c.namespace),
            ] {
                if value.trim().is_empty() {
                    return Err(empty(format!("spec.clusters[{i}].{field}")));
                }
            }
            if !seen.insert(c.name.clone()) {
                return Err(ConfigError::Duplicate {
                    file,
                    name: c.name.clone(),
                });
            }
        }
        let primaries = doc
            .spec
            .clusters
            .iter()
            .filter(|c| c.role == Role::Primary)
            .count();
        if primaries != 1 {
            return Err(ConfigError::Primaries {
                file,
                found: primaries,
            });
        }
        if !doc.spec.clusters.iter().any(|c| c.role == Role::Standby) {
            return Err(ConfigError::NoStandby { file });
        }
        Ok(DrGroup {
            name: doc.metadata.name,
            snapshots: doc.spec.snapshots,
            clusters: doc.spec.clusters,
        })
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterSpec> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The cluster the file names primary (the DR state overrides it).
    pub fn initial_primary(&self) -> &str {
        self.clusters
            .iter()
            .find(|c| c.role == Role::Primary)
            .map_or("", |c| c.name.as_str())
    }

    /// Every member's name, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: kubectl-vault.io/v1alpha1
kind: DRGroup
metadata: {name: prod}
spec:
  snapshots: s3://bucket/prod/
  clusters:
  - {name: east, context: east, namespace: vault, role: primary}
  - {name: west, context: west, namespace: vault, role: standby, statefulset: openbao}
";

    #[test]
    fn the_issue_example_parses() {
        let g = DrGroup::parse(GOOD, "dr.yaml").unwrap();
        assert_eq!(g.name, "prod");
        assert_eq!(g.initial_primary(), "east");
        assert_eq!(
            g.cluster("west").unwrap().statefulset.as_deref(),
            Some("openbao")
        );
        assert_eq!(g.names(), ["east", "west"]);
    }

    #[test]
    fn bad_documents_are_refused_naming_what_is_wrong() {
        let cases = [
            (
                GOOD.replace("v1alpha1", "v2"),
                "apiVersion kubectl-vault.io/v2",
            ),
            (GOOD.replace("kind: DRGroup", "kind: Group"), "kind Group"),
            (
                GOOD.replace("name: west", "name: east"),
                "cluster east twice",
            ),
            (GOOD.replace("role: standby", "role: primary"), "found 2"),
            (GOOD.replace("role: primary", "role: standby"), "found 0"),
            (
                GOOD.replace("s3://bucket/prod/", "''"),
                "spec.snapshots is empty",
            ),
            (
                GOOD.replace("context: west", "context: ''"),
                "spec.clusters[1].context",
            ),
            (
                GOOD.replace("role: standby", "role: spare"),
                "unknown variant",
            ),
            (GOOD.replace("statefulset:", "sts:"), "unknown field `sts`"),
            ("[1, 2".to_owned(), "not a DRGroup"),
        ];
        for (text, words) in cases {
            let e = DrGroup::parse(&text, "dr.yaml").unwrap_err().to_string();
            assert!(e.contains(words), "{words}: {e}");
            assert!(e.contains("dr.yaml"), "{e}");
        }
        let one = GOOD.lines().take(7).collect::<Vec<_>>().join("\n");
        let e = DrGroup::parse(&one, "dr.yaml").unwrap_err().to_string();
        assert!(e.contains("no cluster with role standby"), "{e}");
    }
}
