//! Failover step 6: what clients must switch to reach the new primary.
//!
//! Owns the new primary's address (the member's `address`, or the
//! in-cluster Service in front of its StatefulSet with its listener's
//! scheme) and, for each target `spec.clients` names, the one-line
//! `kubectl patch` that points it there. Pure: nothing is contacted, and a
//! failover never runs these itself (it writes nothing of any cluster but
//! the chosen standby's credentials).

use crate::ops::checkpoint::shell_word;
use crate::ops::dr::config::{host_of, Clients};
use serde::Serialize;

/// The API port of the charts' Services.
const API_PORT: u16 = 8200;

/// One object clients go through, and how to point it at the new primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientSwitch {
    /// `Service` (ExternalName) or `ClusterSecretStore`.
    pub kind: &'static str,
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The field the patch sets, and its new value.
    pub field: &'static str,
    pub value: String,
    /// The one-line command that sets it.
    pub command: String,
}

impl std::fmt::Display for ClientSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name)?,
            None => write!(f, "{} {}", self.kind, self.name)?,
        }
        write!(f, " (context {})", self.context)
    }
}

/// Where clients reach a member: its configured `address`, else
/// `SCHEME://STATEFULSET.NAMESPACE.svc:8200`, the Service the charts put in
/// front of the StatefulSet.
pub fn address(configured: Option<&str>, tls: bool, statefulset: &str, namespace: &str) -> String {
    match configured {
        Some(a) => a.to_owned(),
        None => format!(
            "{}://{statefulset}.{namespace}.svc:{API_PORT}",
            if tls { "https" } else { "http" }
        ),
    }
}

/// The switches of every target `clients` names, towards `address`.
pub fn switches(clients: &Clients, address: &str) -> Vec<ClientSwitch> {
    let mut out = vec![];
    if let Some(s) = &clients.external_name {
        let host = host_of(address).unwrap_or(address).to_owned();
        let patch = serde_json::json!({"spec": {"externalName": host}}).to_string();
        out.push(ClientSwitch {
            kind: "Service",
            context: s.context.clone(),
            namespace: Some(s.namespace.clone()),
            name: s.name.clone(),
            field: "spec.externalName",
            command: format!(
                "kubectl --context {} -n {} patch service {} --type merge -p {}",
                shell_word(&s.context),
                shell_word(&s.namespace),
                shell_word(&s.name),
                shell_word(&patch)
            ),
            value: host,
        });
    }
    if let Some(s) = &clients.cluster_secret_store {
        let patch =
            serde_json::json!({"spec": {"provider": {"vault": {"server": address}}}}).to_string();
        out.push(ClientSwitch {
            kind: "ClusterSecretStore",
            context: s.context.clone(),
            namespace: None,
            name: s.name.clone(),
            field: "spec.provider.vault.server",
            command: format!(
                "kubectl --context {} patch clustersecretstore {} --type merge -p {}",
                shell_word(&s.context),
                shell_word(&s.name),
                shell_word(&patch)
            ),
            value: address.to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dr::config::{ClusterObjectRef, ServiceRef};

    fn clients() -> Clients {
        Clients {
            external_name: Some(ServiceRef {
                context: "apps".into(),
                namespace: "payments".into(),
                name: "vault".into(),
            }),
            cluster_secret_store: Some(ClusterObjectRef {
                context: "apps east".into(),
                name: "vault-backend".into(),
            }),
        }
    }

    #[test]
    fn the_address_is_the_configured_one_or_the_statefulsets_service() {
        assert_eq!(
            address(None, true, "openbao", "vault"),
            "https://openbao.vault.svc:8200"
        );
        assert_eq!(
            address(None, false, "vault", "dr"),
            "http://vault.dr.svc:8200"
        );
        assert_eq!(
            address(Some("https://vault.west.example"), false, "vault", "dr"),
            "https://vault.west.example"
        );
    }

    #[test]
    fn each_target_gets_its_one_line_patch() {
        let s = switches(&clients(), "https://openbao.west.svc:8200");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].command,
            r#"kubectl --context apps -n payments patch service vault --type merge -p '{"spec":{"externalName":"openbao.west.svc"}}'"#
        );
        assert_eq!(s[0].value, "openbao.west.svc");
        assert_eq!(s[0].to_string(), "Service payments/vault (context apps)");
        assert_eq!(
            s[1].command,
            r#"kubectl --context 'apps east' patch clustersecretstore vault-backend --type merge -p '{"spec":{"provider":{"vault":{"server":"https://openbao.west.svc:8200"}}}}'"#
        );
        assert_eq!(s[1].field, "spec.provider.vault.server");
        assert!(switches(&Clients::default(), "http://x.y:8200").is_empty());
    }
}
