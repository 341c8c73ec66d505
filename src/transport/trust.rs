//! What a TLS listener is checked against by the direct transport: the CA
//! and server name the container's own CLI would use.
//!
//! Owns reading the container's address and TLS settings (`BAO_ADDR`,
//! `BAO_CACERT`, `BAO_SKIP_VERIFY`, `BAO_TLS_SERVER_NAME` and their `VAULT_`
//! forms) from what one exec printed, and the rustls client that checks a
//! pod's certificate. The exec itself is discovery's business.
//!
//! # Guarantees
//! - A certificate not signed by the container's CA is refused with an
//!   error naming the pod and the CA file; there is no fallback.
//! - Verification is skipped only when the container itself sets
//!   `*_SKIP_VERIFY`, and that is logged at `-v`.
//!
//! # Caveats
//! - The CA path of the server config's listener stanza, `*_CAPATH` and
//!   client certificates (`*_CLIENT_CERT`/`*_CLIENT_KEY`) are not read: a
//!   TLS listener without `*_CACERT` in the container is left to exec.

use crate::ops::node::NodeError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// Marks the start of the CA file in the probe's output.
pub const CA_MARKER: &str = "#kubectl-vault-ca";

/// The environment variables the probe prints (when set).
pub const PROBED_VARS: &str = "(BAO|VAULT)_(ADDR|CACERT|SKIP_VERIFY|TLS_SERVER_NAME)";

/// The container's address and TLS settings, as its CLI sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerTls {
    /// `BAO_ADDR`/`VAULT_ADDR` ("" when unset).
    pub addr: String,
    /// The variable naming the CA file, and the file.
    pub ca_file: Option<(String, String)>,
    /// The CA file's content (PEM), when the address is https.
    pub ca_pem: Vec<u8>,
    /// The `*_SKIP_VERIFY` variable set to true, if any.
    pub skip_verify: Option<String>,
    /// `*_TLS_SERVER_NAME`, if set.
    pub server_name: Option<String>,
}

impl ContainerTls {
    /// Reads the probe's output after its first line: `NAME=value` lines,
    /// then the CA file after [`CA_MARKER`]. `prefix` is the CLI's own
    /// variable prefix (`BAO` or `VAULT`), preferred over the other.
    pub fn parse(text: &str, prefix: &str) -> ContainerTls {
        let (vars, ca) = match text.split_once(CA_MARKER) {
            Some((vars, ca)) => (vars, ca.trim_start_matches('\n')),
            None => (text, ""),
        };
        let lookup = |suffix: &str| {
            let other = if prefix == "BAO" { "VAULT" } else { "BAO" };
            [prefix, other].iter().find_map(|p| {
                let name = format!("{p}_{suffix}");
                vars.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}=")))
                    .filter(|v| !v.is_empty())
                    .map(|v| (name, v.to_owned()))
            })
        };
        ContainerTls {
            addr: lookup("ADDR").map(|(_, v)| v).unwrap_or_default(),
            ca_file: lookup("CACERT"),
            ca_pem: ca.as_bytes().to_vec(),
            skip_verify: lookup("SKIP_VERIFY")
                .filter(|(_, v)| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
                .map(|(name, _)| name),
            server_name: lookup("TLS_SERVER_NAME").map(|(_, v)| v),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.addr.starts_with("https://")
    }

    /// The host of the address, without port or brackets.
    pub fn host(&self) -> &str {
        let rest = self.addr.split_once("://").map_or(&*self.addr, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().unwrap_or_default();
        }
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    }
}

/// How every pod of one workload is checked: built once per command.
#[derive(Clone)]
pub struct WorkloadTrust {
    check: Check,
    /// What a refusal names: `BAO_CACERT=/path`.
    ca_file: String,
    /// The name the CLI verifies, unless it is loopback (then each pod's DNS names).
    name: Option<String>,
}

#[derive(Clone)]
enum Check {
    Roots(Arc<rustls::RootCertStore>),
    Skip,
}

impl WorkloadTrust {
    /// The trust for a TLS listener; `Err` when the container gives the
    /// direct transport nothing to verify with (no CA file).
    pub fn new(tls: &ContainerTls) -> Result<WorkloadTrust, String> {
        let name = tls.server_name.clone().or_else(|| {
            let host = tls.host();
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            (!loopback && !host.is_empty()).then(|| host.to_owned())
        });
        if let Some(var) = &tls.skip_verify {
            tracing::debug!(variable = %var, "the container sets {var}: the direct transport does not verify listener certificates either");
            return Ok(WorkloadTrust {
                check: Check::Skip,
                ca_file: var.clone(),
                name,
            });
        }
        let Some((var, path)) = &tls.ca_file else {
            return Err(format!(
                "the listener is TLS ({}) and the container names no CA file (BAO_CACERT/VAULT_CACERT)",
                tls.addr
            ));
        };
        let ca_file = format!("{var}={path}");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&tls.ca_pem) {
            let cert = cert.map_err(|e| format!("the CA file {ca_file} is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the CA file {ca_file} holds an unusable certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("the CA file {ca_file} holds no certificate"));
        }
        Ok(WorkloadTrust {
            check: Check::Roots(Arc::new(roots)),
            ca_file,
            name,
        })
    }

    /// The check for one pod; `dns_names` are the pod's DNS names, used when
    /// the container's address is loopback.
    pub fn for_pod(&self, pod: &str, dns_names: &[String]) -> Result<PodTrust, NodeError> {
        let mut names: Vec<ServerName<'static>> = match &self.name {
            Some(name) => vec![server_name(name)?],
            None => dns_names
                .iter()
                .filter_map(|n| server_name(n).ok())
                .collect(),
        };
        if names.is_empty() {
            names.push(server_name(pod)?);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &self.check {
            Check::Roots(roots) => Arc::new(AnyOfNames {
                inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots.clone(),
                    provider.clone(),
                )
                .build()
                .map_err(|e| NodeError::Malformed(format!("TLS verifier: {e}")))?,
                names: names.clone(),
            }),
            Check::Skip => Arc::new(NoVerification(provider.clone())),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NodeError::Malformed(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(PodTrust {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: names.swap_remove(0),
            pod: pod.to_owned(),
            ca_file: self.ca_file.clone(),
        })
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, NodeError> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| NodeError::Malformed(format!("{name} is not a valid TLS server name")))
}

/// The TLS client for one pod's listener.
pub struct PodTrust {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    pod: String,
    ca_file: String,
}

impl PodTrust {
    /// The TLS handshake over the forwarded stream.
    pub async fn connect<S>(
        &self,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, NodeError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.connector
            .connect(self.name.clone(), stream)
            .await
            .map_err(|e| {
                let untrusted = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                if untrusted {
                    NodeError::Untrusted(format!(
                        "the listener certificate of pod {} is not trusted by the CA file {}: {e}",
                        self.pod, self.ca_file
                    ))
                } else {
                    NodeError::Unreachable(format!("TLS handshake with pod {}: {e}", self.pod))
                }
            })
    }
}

/// The CA's verdict, for any of the names the pod may go by.
#[derive(Debug)]
struct AnyOfNames {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for AnyOfNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut first = None;
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(verified) => return Ok(verified),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| rustls::Error::General("no server name to verify".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What `*_SKIP_VERIFY` asks of the CLI: any certificate, with its
/// handshake signatures still checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clis_own_variables_win_and_the_ca_follows_the_marker() {
        let text = format!(
            "VAULT_ADDR=http://x:8200\nBAO_ADDR=https://127.0.0.1:8200\nBAO_CACERT=/openbao/userconfig/tls/ca.crt\nVAULT_SKIP_VERIFY=false\n{CA_MARKER}\n-----BEGIN CERTIFICATE-----\n"
        );
        let tls = ContainerTls::parse(&text, "BAO");
        assert_eq!(tls.addr, "https://127.0.0.1:8200");
        assert!(tls.is_tls());
        assert_eq!(tls.host(), "127.0.0.1");
        assert_eq!(
            tls.ca_file,
            Some(("BAO_CACERT".into(), "/openbao/userconfig/tls/ca.crt".into()))
        );
        assert_eq!(tls.skip_verify, None);
        assert!(tls.ca_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let vault = ContainerTls::parse(
            "VAULT_ADDR=https://[::1]:8200\nVAULT_SKIP_VERIFY=true\n",
            "VAULT",
        );
        assert_eq!(vault.host(), "::1");
        assert_eq!(vault.skip_verify.as_deref(), Some("VAULT_SKIP_VERIFY"));
    }

    #[test]
    fn a_tls_listener_without_a_ca_file_is_left_to_exec() {
        let tls = ContainerTls::parse("BAO_ADDR=https://127.0.0.1:8200\n", "BAO");
        let refused = WorkloadTrust::new(&tls).err().unwrap();
        assert!(refused.contains("no CA file"), "{refused}");
    }
}
