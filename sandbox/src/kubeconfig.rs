//! The kubeconfig clients use: one context (`sandbox` unless named) whose
//! cluster and user carry its name, a bearer-token user, the cluster
//! namespace, and the CA when serving HTTPS. Distinct names let several
//! sandboxes' kubeconfigs merge in one `KUBECONFIG`.

use base64::Engine;

/// Renders a kubeconfig for `server` with `token`, `namespace` and optional
/// CA PEM, whose context is `context` (cluster `context`, user `context-admin`).
pub fn render(
    context: &str,
    server: &str,
    token: &str,
    namespace: &str,
    ca_pem: Option<&str>,
) -> String {
    let ca = ca_pem
        .map(|pem| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {server}\n{ca}\
         users:\n- name: {context}-admin\n  user:\n    token: {token}\n\
         contexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}-admin\n    namespace: {namespace}\n\
         current-context: {context}\npreferences: {{}}\n"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubeconfig_parses_with_kube() {
        let text = super::render(
            "sandbox",
            "https://127.0.0.1:1",
            "tok",
            "vault",
            Some("-----BEGIN CERTIFICATE-----\n"),
        );
        let kc: kube::config::Kubeconfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("sandbox"));
        let ctx = kc.contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.namespace.as_deref(), Some("vault"));
    }

    /// Two sandboxes named apart merge into one kubeconfig with both contexts,
    /// each reaching its own server with its own token.
    #[test]
    fn named_kubeconfigs_merge_without_clashes() {
        let east = super::render("east", "http://127.0.0.1:1", "tok-e", "vault", None);
        let west = super::render("west", "http://127.0.0.1:2", "tok-w", "dr", None);
        let east: kube::config::Kubeconfig = serde_yaml::from_str(&east).unwrap();
        let west: kube::config::Kubeconfig = serde_yaml::from_str(&west).unwrap();
        let merged = east.merge(west).unwrap();
        let names: Vec<_> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["east", "west"]);
        let west = merged.contexts[1].context.as_ref().unwrap();
        assert_eq!(west.cluster, "west");
        assert_eq!(west.user.as_deref(), Some("west-admin"));
        assert_eq!(west.namespace.as_deref(), Some("dr"));
        let cluster = merged.clusters.iter().find(|c| c.name == "west").unwrap();
        assert_eq!(
            cluster.cluster.as_ref().unwrap().server.as_deref(),
            Some("http://127.0.0.1:2")
        );
        assert_eq!(merged.auth_infos.len(), 2);
    }
}
