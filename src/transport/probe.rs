//! What one exec tells about a workload's server container: which CLI it
//! has, the address that CLI uses, and the TLS material it would use with
//! it (the CA, and a client certificate and key).
//!
//! Owns the probe script and reading its answer. What the TLS settings
//! mean is [`crate::transport::trust`]'s business.
//!
//! # Guarantees
//! - One exec per workload; nothing is written in the pod.
//! - The client key travels only in the exec's output, which is parsed
//!   into a zeroizing buffer and then wiped.

use crate::ops::cluster::ClusterError;
use crate::transport::exec::{run_in, CliFlavour};
use crate::transport::trust::{
    ContainerTls, CA_MARKER, CLIENT_CERT_MARKER, CLIENT_KEY_MARKER, LISTENER_CA, PROBED_VARS,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

/// Asks the container which CLI it has, trying the one its image suggests
/// first, and reads the address and TLS settings that CLI uses, with the CA
/// file when the address is https: one exec per workload.
pub async fn probe_container(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    spec: &Pod,
) -> Result<(CliFlavour, ContainerTls), ClusterError> {
    let image = spec
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let order = if image.contains("vault") && !image.contains("openbao") {
        "vault bao"
    } else {
        "bao vault"
    };
    let script = probe_script(order);
    let mut argv = vec!["sh".into(), "-c".into(), script, "sh".into()];
    argv.extend(server_configs(spec, container));
    let mut out = run_in(pods, pod, container, argv, None)
        .await
        .map_err(|e| match e {
            crate::ops::node::NodeError::Forbidden(reason) => ClusterError::Forbidden {
                action: "create pods/exec".into(),
                reason,
            },
            other => ClusterError::List(format!(
                "could not detect the CLI in pod {pod} container {container}: {other}"
            )),
        })?;
    // The output may hold the client key: parsed into a zeroizing buffer,
    // then wiped here.
    let parsed = probe_answer(&out.stdout, pod, container);
    zeroize::Zeroize::zeroize(&mut out.stdout);
    parsed
}

/// The probe's output: the CLI on the first line, then what
/// [`ContainerTls::parse`] reads.
fn probe_answer(
    stdout: &[u8],
    pod: &str,
    container: &str,
) -> Result<(CliFlavour, ContainerTls), ClusterError> {
    let text = String::from_utf8_lossy(stdout);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let (cli, prefix) = match first.trim() {
        "bao" => (CliFlavour::Bao, "BAO"),
        "vault" => (CliFlavour::Vault, "VAULT"),
        _ => {
            return Err(ClusterError::List(format!(
                "pod {pod} container {container} has neither `bao` nor `vault` on its PATH"
            )))
        }
    };
    Ok((cli, ContainerTls::parse(rest, prefix)))
}

/// The probe run by [`probe_container`]: `order` is the CLIs to try.
fn probe_script(order: &str) -> String {
    // With an https address: the CA as the CLI finds it (`*_CACERT`, else
    // the files in `*_CAPATH`), else the `tls_client_ca_file` of the server
    // config(s) named on the container's command line (passed as `$@`), and
    // the client certificate and key the CLI presents.
    format!(
        "cli=; for c in {order}; do command -v \"$c\" >/dev/null 2>&1 && {{ cli=$c; break; }}; done; [ -n \"$cli\" ] || exit 127; echo \"$cli\"; \
         env | grep -E '^{PROBED_VARS}=' || true; \
         if [ \"$cli\" = bao ]; then p=BAO; q=VAULT; else p=VAULT; q=BAO; fi; \
         v() {{ eval \"r=\\${{${{p}}_$1:-\\${{${{q}}_$1}}}}\"; }}; \
         v ADDR; a=$r; v CACERT; ca=$r; v CAPATH; cap=$r; v CLIENT_CERT; cc=$r; v CLIENT_KEY; ck=$r; \
         case \"$a\" in https://*) \
           if [ -z \"$ca\" ] && [ -z \"$cap\" ]; then for c in \"$@\"; do for f in \"$c\" \"$c\"/*.hcl; do [ -f \"$f\" ] && [ -r \"$f\" ] || continue; \
             ca=$(sed -n 's/^[[:space:]]*tls_client_ca_file[[:space:]]*=[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p' \"$f\" | head -n 1); \
             [ -n \"$ca\" ] && {{ echo \"{LISTENER_CA}=$ca\"; break 2; }}; done; done; fi; \
           echo '{CA_MARKER}'; \
           if [ -n \"$ca\" ] && [ -r \"$ca\" ]; then cat \"$ca\"; \
           elif [ -n \"$cap\" ] && [ -d \"$cap\" ]; then for f in \"$cap\"/*; do [ -f \"$f\" ] && [ -r \"$f\" ] && {{ cat \"$f\"; echo; }}; done; fi; \
           if [ -n \"$cc\" ] && [ -n \"$ck\" ] && [ -r \"$cc\" ] && [ -r \"$ck\" ]; then echo '{CLIENT_CERT_MARKER}'; cat \"$cc\"; echo '{CLIENT_KEY_MARKER}'; cat \"$ck\"; fi;; \
         esac"
    )
}

/// The words of the container's command and args, also split out of a
/// `sh -c` script as the charts write it.
fn command_words(spec: &Pod, container: &str) -> Vec<String> {
    spec.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .map(|c| {
            c.command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .flat_map(|a| {
                    a.split(|ch: char| ch.is_whitespace() || ch == ';' || ch == '&')
                        .map(|w| w.trim_matches(|ch| ch == '"' || ch == '\''))
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the pod spec alone tells, when that is all the probe would learn:
/// the server runs as `bao server` or `vault server` (the binary is the
/// CLI), and that CLI's own `*_ADDR` is a literal `http://` address, so no
/// CA or client certificate applies. `None` sends discovery to the probe.
///
/// # Guarantees
/// Never guesses: both CLIs named, no CLI named, an address from
/// `valueFrom` or with `$(…)`, or an https address all give `None`.
pub fn from_spec(spec: &Pod, container: &str) -> Option<(CliFlavour, ContainerTls)> {
    let words = command_words(spec, container);
    let runs = |cli: &str| {
        words
            .windows(2)
            .any(|w| (w[0] == cli || w[0].ends_with(&format!("/{cli}"))) && w[1] == "server")
    };
    let (cli, variable) = match (runs("bao"), runs("vault")) {
        (true, false) => (CliFlavour::Bao, "BAO_ADDR"),
        (false, true) => (CliFlavour::Vault, "VAULT_ADDR"),
        _ => return None,
    };
    let addr = spec
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == variable)?
        .value
        .clone()?;
    if !addr.starts_with("http://") || addr.contains("$(") {
        return None;
    }
    Some((
        cli,
        ContainerTls {
            addr,
            ..ContainerTls::default()
        },
    ))
}

/// The server config files or folders named on the container's command
/// line (`-config=PATH`, `-config PATH`, `--config ...`), also inside a
/// `sh -c` script as the charts write it.
pub(crate) fn server_configs(spec: &Pod, container: &str) -> Vec<String> {
    let words = command_words(spec, container);
    let mut paths = Vec::new();
    let mut next_is_path = false;
    for w in &words {
        if next_is_path {
            paths.push(w.clone());
            next_is_path = false;
        } else if let Some(p) = w
            .strip_prefix("-config=")
            .or_else(|| w.strip_prefix("--config="))
        {
            paths.push(p.to_owned());
        } else if w == "-config" || w == "--config" {
            next_is_path = true;
        }
    }
    for p in &mut paths {
        *p = p.trim_matches(|ch| ch == '"' || ch == '\'').to_owned();
    }
    paths.retain(|p| p.starts_with('/'));
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pod_with_args(args: &[&str]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vault-0"},
            "spec": {"containers": [
                {"name": "vault", "command": ["/bin/sh", "-ec"], "args": args},
            ]},
        }))
        .expect("pod")
    }

    fn pod_with_env(args: &[&str], env: serde_json::Value) -> Pod {
        let mut pod = pod_with_args(args);
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers[0].env = Some(serde_json::from_value(env).expect("env"));
        }
        pod
    }

    #[test]
    fn the_spec_answers_for_the_charts_plain_http_defaults_and_never_guesses() {
        let chart = "cp /vault/config/extraconfig-from-values.hcl /tmp/storageconfig.hcl;\n\
                     /usr/local/bin/docker-entrypoint.sh vault server -config=/tmp/storageconfig.hcl \n";
        let http = serde_json::json!([{"name": "VAULT_ADDR", "value": "http://127.0.0.1:8200"}]);
        let (cli, tls) = from_spec(&pod_with_env(&[chart], http.clone()), "vault").expect("known");
        assert_eq!(cli, CliFlavour::Vault);
        assert_eq!(tls.addr, "http://127.0.0.1:8200");
        assert!(!tls.is_tls());
        let bao = serde_json::json!([{"name": "BAO_ADDR", "value": "http://127.0.0.1:8200"}]);
        let (cli, _) =
            from_spec(&pod_with_env(&["bao server -config=/x.hcl"], bao), "vault").expect("known");
        assert_eq!(cli, CliFlavour::Bao);
        // Everything else goes to the probe.
        let https = serde_json::json!([{"name": "VAULT_ADDR", "value": "https://127.0.0.1:8200"}]);
        assert!(from_spec(&pod_with_env(&[chart], https), "vault").is_none());
        let templated =
            serde_json::json!([{"name": "VAULT_ADDR", "value": "http://$(POD_IP):8200"}]);
        assert!(from_spec(&pod_with_env(&[chart], templated), "vault").is_none());
        let other_cli = serde_json::json!([{"name": "BAO_ADDR", "value": "http://127.0.0.1:8200"}]);
        assert!(from_spec(&pod_with_env(&[chart], other_cli), "vault").is_none());
        assert!(from_spec(&pod_with_env(&["server -dev"], http.clone()), "vault").is_none());
        let both = "vault server -config=/a.hcl || bao server -config=/a.hcl";
        assert!(from_spec(&pod_with_env(&[both], http.clone()), "vault").is_none());
        assert!(from_spec(&pod_with_args(&[chart]), "vault").is_none());
        assert!(from_spec(&pod_with_env(&[chart], http), "other").is_none());
    }

    #[test]
    fn the_config_is_found_in_the_charts_entrypoint_script() {
        // What the hashicorp/vault chart renders (FIELD-NOTES), one string.
        let chart = "cp /vault/config/extraconfig-from-values.hcl /tmp/storageconfig.hcl;\n\
                     [ -n \"${HOST_IP}\" ] && sed -Ei \"s|HOST_IP|${HOST_IP?}|g\" /tmp/storageconfig.hcl;\n\
                     /usr/local/bin/docker-entrypoint.sh vault server -config=/tmp/storageconfig.hcl \n";
        assert_eq!(
            server_configs(&pod_with_args(&[chart]), "vault"),
            ["/tmp/storageconfig.hcl"]
        );
        let split = pod_with_args(&["bao server -config /etc/bao -config='/etc/extra.hcl'"]);
        assert_eq!(
            server_configs(&split, "vault"),
            ["/etc/bao", "/etc/extra.hcl"]
        );
        assert!(server_configs(&split, "other").is_empty());
        // A relative path depends on a working directory exec does not share.
        assert!(
            server_configs(&pod_with_args(&["vault server -config=x.hcl"]), "vault").is_empty()
        );
    }

    /// Runs the probe with the local `sh`, a stand-in `bao` on PATH and
    /// `env` as the container's, and reads its answer.
    fn probe_locally(dir: &Path, env: &[(&str, String)], configs: &[String]) -> ContainerTls {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let cli = bin.join("bao");
        std::fs::write(&cli, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe_script("bao vault"))
            .arg("sh")
            .args(configs)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let (cli, tls) = probe_answer(&out.stdout, "vault-0", "vault").unwrap();
        assert_eq!(cli, CliFlavour::Bao);
        tls
    }

    const PEM_A: &str = "-----BEGIN CERTIFICATE-----\nQUFB\n-----END CERTIFICATE-----\n";
    const PEM_B: &str = "-----BEGIN CERTIFICATE-----\nQkJC\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_ca_comes_from_cacert_then_capath_then_the_listener_stanza() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("capath")).unwrap();
        std::fs::write(d.join("capath/a.crt"), PEM_A).unwrap();
        std::fs::write(d.join("capath/b.pem"), PEM_B).unwrap();
        std::fs::write(d.join("ca.crt"), PEM_A).unwrap();
        let config = d.join("storageconfig.hcl");
        std::fs::write(
            &config,
            format!(
                "listener \"tcp\" {{\n  address = \"[::]:8200\"\n  tls_cert_file = \"/x/tls.crt\"\n  tls_client_ca_file = \"{}\"\n}}\n",
                d.join("ca.crt").display()
            ),
        )
        .unwrap();
        let configs = [config.display().to_string()];
        let addr = ("BAO_ADDR", "https://127.0.0.1:8200".to_owned());
        let capath = ("VAULT_CAPATH", d.join("capath").display().to_string());

        // *_CACERT wins over *_CAPATH, as in the CLI.
        let cacert = ("BAO_CACERT", d.join("ca.crt").display().to_string());
        let tls = probe_locally(d, &[addr.clone(), cacert.clone(), capath.clone()], &configs);
        assert_eq!(tls.ca_file, Some(("BAO_CACERT".into(), cacert.1.clone())));
        assert_eq!(tls.ca_pem, PEM_A.as_bytes());

        // *_CAPATH: every file in the folder.
        let tls = probe_locally(d, &[addr.clone(), capath.clone()], &configs);
        assert_eq!(tls.ca_file, Some(("VAULT_CAPATH".into(), capath.1.clone())));
        let text = String::from_utf8(tls.ca_pem.clone()).unwrap();
        assert!(text.contains("QUFB") && text.contains("QkJC"), "{text}");

        // Neither: the listener stanza of the config on the command line.
        let tls = probe_locally(d, std::slice::from_ref(&addr), &configs);
        assert_eq!(
            tls.ca_file,
            Some(("tls_client_ca_file".into(), cacert.1.clone()))
        );
        assert_eq!(tls.ca_pem, PEM_A.as_bytes());

        // A config folder is searched too; without any config, no CA.
        let tls = probe_locally(d, std::slice::from_ref(&addr), &[d.display().to_string()]);
        assert_eq!(tls.ca_pem, PEM_A.as_bytes());
        let tls = probe_locally(d, std::slice::from_ref(&addr), &[]);
        assert_eq!(tls.ca_file, None);
        assert!(tls.ca_pem.is_empty());

        // A plain-HTTP address reads no files at all.
        let tls = probe_locally(
            d,
            &[("BAO_ADDR", "http://127.0.0.1:8200".into()), cacert],
            &configs,
        );
        assert!(tls.ca_pem.is_empty() && tls.client.is_none());
    }

    #[test]
    fn the_client_certificate_and_key_are_read_only_when_both_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ca.crt"), PEM_A).unwrap();
        std::fs::write(d.join("tls.crt"), PEM_B).unwrap();
        let key = "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n";
        std::fs::write(d.join("tls.key"), key).unwrap();
        let env = |key_file: &str| {
            vec![
                ("VAULT_ADDR", "https://vault.example:8200".to_owned()),
                ("VAULT_CACERT", d.join("ca.crt").display().to_string()),
                ("VAULT_CLIENT_CERT", d.join("tls.crt").display().to_string()),
                ("VAULT_CLIENT_KEY", d.join(key_file).display().to_string()),
            ]
        };
        let tls = probe_locally(d, &env("tls.key"), &[]);
        assert_eq!(tls.ca_pem, PEM_A.as_bytes(), "the CA stops at the marker");
        let client = tls.client.expect("a client identity");
        assert_eq!(client.cert_pem, PEM_B.as_bytes());
        assert_eq!(client.key_pem.expose(), key.as_bytes());
        assert!(client.cert_file.starts_with("VAULT_CLIENT_CERT="));
        assert!(
            !format!("{client:?}").contains("S0VZ"),
            "the key is redacted"
        );

        let tls = probe_locally(d, &env("missing.key"), &[]);
        assert!(tls.client.is_none());
    }
}
