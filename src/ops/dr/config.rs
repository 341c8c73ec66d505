//! The DR group file (`--config dr.yaml`): which clusters form the group,
//! how each is reached, and where the snapshots and the DR state live.
//!
//! Owns parsing and validating it, purely: no cluster is contacted here.
//! `role` is only the starting point; once the DR state exists it decides
//! who is primary. `spec.clients` names what clients reach the primary
//! through (an ExternalName Service, an External Secrets Operator
//! `ClusterSecretStore`); a failover only prints how to switch them.

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
    /// The URL clients reach this cluster's servers at (`https://vault.west.example:8200`);
    /// when absent, the in-cluster Service in front of the StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// What clients reach the primary through, switched after a failover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Clients {
    /// An ExternalName Service whose `spec.externalName` is the primary's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<ServiceRef>,
    /// An External Secrets Operator `ClusterSecretStore` whose
    /// `spec.provider.vault.server` is the primary's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_secret_store: Option<ClusterObjectRef>,
}

/// A namespaced object in a kube context (not necessarily a member's).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub context: String,
    pub namespace: String,
    pub name: String,
}

/// A cluster-scoped object in a kube context.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterObjectRef {
    pub context: String,
    pub name: String,
}

/// A validated DR group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrGroup {
    pub name: String,
    /// A folder or `s3://bucket/prefix/`: the primary's snapshots and the DR state.
    pub snapshots: String,
    pub clusters: Vec<ClusterSpec>,
    /// What clients must switch after a failover (none named: nothing).
    pub clients: Clients,
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
    #[serde(default)]
    clients: Clients,
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
    #[error("{file}: {field} is {value:?}; it must be an http:// or https:// URL with a host and nothing a shell would read (no spaces or quotes)")]
    Address {
        file: String,
        field: String,
        value: String,
    },
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
            if let Some(address) = &c.address {
                if host_of(address).is_none() {
                    return Err(ConfigError::Address {
                        file,
                        field: format!("spec.clusters[{i}].address"),
                        value: address.clone(),
                    });
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
        let clients = &doc.spec.clients;
        let mut fields = vec![];
        if let Some(s) = &clients.external_name {
            fields.extend([
                ("spec.clients.externalName.context", &s.context),
                ("spec.clients.externalName.namespace", &s.namespace),
                ("spec.clients.externalName.name", &s.name),
            ]);
        }
        if let Some(s) = &clients.cluster_secret_store {
            fields.extend([
                ("spec.clients.clusterSecretStore.context", &s.context),
                ("spec.clients.clusterSecretStore.name", &s.name),
            ]);
        }
        if let Some((field, _)) = fields.iter().find(|(_, v)| v.trim().is_empty()) {
            return Err(empty((*field).to_owned()));
        }
        Ok(DrGroup {
            name: doc.metadata.name,
            snapshots: doc.spec.snapshots,
            clusters: doc.spec.clusters,
            clients: doc.spec.clients,
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

/// The host of an `http(s)://host[:port][/...]` address; `None` when it is
/// not one, or holds a character a shell or a JSON patch would read.
pub fn host_of(address: &str) -> Option<&str> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))?;
    if address
        .chars()
        .any(|c| c.is_whitespace() || "'\"\\`$".contains(c))
    {
        return None;
    }
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    (!host.is_empty()).then_some(host)
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
        assert_eq!(g.clients, Clients::default());
    }

    #[test]
    fn client_targets_parse_and_bad_ones_are_refused_naming_the_field() {
        let with = |clients: &str| format!("{GOOD}  clients:\n{clients}");
        let both = with("    externalName: {context: apps, namespace: payments, name: vault}\n    clusterSecretStore: {context: apps, name: vault-backend}\n");
        let g = DrGroup::parse(&both, "dr.yaml").unwrap();
        assert_eq!(
            g.clients.external_name,
            Some(ServiceRef {
                context: "apps".into(),
                namespace: "payments".into(),
                name: "vault".into()
            })
        );
        assert_eq!(
            g.clients.cluster_secret_store,
            Some(ClusterObjectRef {
                context: "apps".into(),
                name: "vault-backend".into()
            })
        );
        let cases = [
            (
                with("    externalname: {context: a, namespace: b, name: c}\n"),
                "unknown field `externalname`",
            ),
            (
                with("    externalName: {context: a, namespace: b, name: c, port: 1}\n"),
                "unknown field `port`",
            ),
            (
                with("    clusterSecretStore: {context: a, namespace: b, name: c}\n"),
                "unknown field `namespace`",
            ),
            (
                with("    clusterSecretStore: {context: '', name: c}\n"),
                "spec.clients.clusterSecretStore.context is empty",
            ),
            (
                with("    externalName: {context: a, name: c}\n"),
                "missing field `namespace`",
            ),
            (
                GOOD.replace("statefulset: openbao", "address: vault.west.example"),
                "spec.clusters[1].address",
            ),
            (
                GOOD.replace("statefulset: openbao", "address: \"https://x' y\""),
                "spec.clusters[1].address",
            ),
        ];
        for (text, words) in cases {
            let e = DrGroup::parse(&text, "dr.yaml").unwrap_err().to_string();
            assert!(e.contains(words), "{words}: {e}");
        }
        let addressed = GOOD.replace(
            "statefulset: openbao",
            "address: \"https://vault.west.example:8200\"",
        );
        let g = DrGroup::parse(&addressed, "dr.yaml").unwrap();
        assert_eq!(
            g.cluster("west").unwrap().address.as_deref(),
            Some("https://vault.west.example:8200")
        );
    }

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(
            host_of("https://vault.west.example:8200"),
            Some("vault.west.example")
        );
        assert_eq!(
            host_of("http://openbao.vault.svc"),
            Some("openbao.vault.svc")
        );
        assert_eq!(host_of("https://v.example/ui"), Some("v.example"));
        assert_eq!(host_of("vault.example:8200"), None);
        assert_eq!(host_of("https://:8200"), None);
        assert_eq!(host_of("https://a b"), None);
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
