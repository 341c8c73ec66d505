//! The kubeconfig clients use: cluster `sandbox`, bearer-token user, the
//! cluster namespace, and the CA when serving HTTPS.

use base64::Engine;

/// Renders a kubeconfig for `server` with `token`, `namespace` and optional CA PEM.
pub fn render(server: &str, token: &str, namespace: &str, ca_pem: Option<&str>) -> String {
    let ca = ca_pem
        .map(|pem| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\n{ca}\
         users:\n- name: sandbox-admin\n  user:\n    token: {token}\n\
         contexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox-admin\n    namespace: {namespace}\n\
         current-context: sandbox\npreferences: {{}}\n"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubeconfig_parses_with_kube() {
        let text = super::render(
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
}
