//! What a TLS listener is checked against by the direct transport: the CA
//! and server name the container's own CLI would use.
//!
//! Owns reading the container's address and TLS settings (`BAO_ADDR`,
//! `BAO_CACERT`, `BAO_CAPATH`, `BAO_SKIP_VERIFY`, `BAO_TLS_SERVER_NAME`,
//! `BAO_CLIENT_CERT`/`BAO_CLIENT_KEY` and their `VAULT_` forms) from what
//! one exec printed, and the rustls client that checks a pod's certificate
//! and presents the container's client certificate. The exec itself is
//! discovery's business.
//!
//! # Where the CA comes from
//! As the container's CLI finds it: `*_CACERT`, else every file in the
//! `*_CAPATH` folder. When the env names neither, the CA file the server
//! config's listener stanza names (`tls_client_ca_file`), the CA a chart
//! user's listener certificates come from.
//!
//! # Guarantees
//! - A certificate not signed by the container's CA is refused with an
//!   error naming the pod and the CA file; there is no fallback.
//! - Verification is skipped only when the container itself sets
//!   `*_SKIP_VERIFY`, and that is logged at `-v`.
//! - The client key is held in a zeroizing buffer and never printed.
//!
//! # Caveats
//! - A CA named only in the listener stanza serves the direct transport;
//!   what runs through exec uses the container's CLI, which (like this
//!   tool's exec transport) does not read the server config.

use crate::ops::node::NodeError;
use crate::ops::secret::SecretBytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// Marks the start of the CA file(s) in the probe's output.
pub const CA_MARKER: &str = "#kubectl-vault-ca";
/// Marks the start of the client certificate in the probe's output.
pub const CLIENT_CERT_MARKER: &str = "#kubectl-vault-client-cert";
/// Marks the start of the client key in the probe's output.
pub const CLIENT_KEY_MARKER: &str = "#kubectl-vault-client-key";
/// The line the probe prints when the CA came from the server config.
pub const LISTENER_CA: &str = "KUBECTL_VAULT_LISTENER_CA";

/// The environment variables the probe prints (when set).
pub const PROBED_VARS: &str =
    "(BAO|VAULT)_(ADDR|CACERT|CAPATH|SKIP_VERIFY|TLS_SERVER_NAME|CLIENT_CERT|CLIENT_KEY)";

/// The container's address and TLS settings, as its CLI sees them.
#[derive(Clone, Debug, Default)]
pub struct ContainerTls {
    /// `BAO_ADDR`/`VAULT_ADDR` ("" when unset).
    pub addr: String,
    /// Where the CA was named (`BAO_CACERT`, `BAO_CAPATH`, or
    /// `tls_client_ca_file` of the listener stanza), and the file or folder.
    pub ca_file: Option<(String, String)>,
    /// The CA file's content (PEM), when the address is https.
    pub ca_pem: Vec<u8>,
    /// The `*_SKIP_VERIFY` variable set to true, if any.
    pub skip_verify: Option<String>,
    /// `*_TLS_SERVER_NAME`, if set.
    pub server_name: Option<String>,
    /// The client certificate the CLI presents (`*_CLIENT_CERT` and
    /// `*_CLIENT_KEY`, both readable), when the address is https.
    pub client: Option<ClientIdentity>,
}

/// A client certificate chain and its key, both PEM.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// `BAO_CLIENT_CERT=/path`, for messages.
    pub cert_file: String,
    pub cert_pem: Vec<u8>,
    pub key_pem: SecretBytes,
}

impl ContainerTls {
    /// Reads the probe's output after its first line: `NAME=value` lines,
    /// then the CA after [`CA_MARKER`], then the client certificate and key
    /// after theirs. `prefix` is the CLI's own variable prefix (`BAO` or
    /// `VAULT`), preferred over the other.
    pub fn parse(text: &str, prefix: &str) -> ContainerTls {
        let (rest, key) = match text.split_once(CLIENT_KEY_MARKER) {
            Some((rest, key)) => (rest, Some(key.trim_start_matches('\n'))),
            None => (text, None),
        };
        let (rest, cert) = match rest.split_once(CLIENT_CERT_MARKER) {
            Some((rest, cert)) => (rest, Some(cert.trim_start_matches('\n'))),
            None => (rest, None),
        };
        let (vars, ca) = match rest.split_once(CA_MARKER) {
            Some((vars, ca)) => (vars, ca.trim_start_matches('\n')),
            None => (rest, ""),
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
        let listener_ca = vars
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{LISTENER_CA}=")))
            .filter(|v| !v.is_empty())
            .map(|v| ("tls_client_ca_file".to_owned(), v.to_owned()));
        let client = match (lookup("CLIENT_CERT"), cert, key) {
            (Some((var, path)), Some(cert), Some(key)) => Some(ClientIdentity {
                cert_file: format!("{var}={path}"),
                cert_pem: cert.as_bytes().to_vec(),
                key_pem: SecretBytes::new(key.as_bytes().to_vec()),
            }),
            _ => None,
        };
        ContainerTls {
            addr: lookup("ADDR").map(|(_, v)| v).unwrap_or_default(),
            ca_file: lookup("CACERT")
                .or_else(|| lookup("CAPATH"))
                .or(listener_ca),
            ca_pem: ca.as_bytes().to_vec(),
            skip_verify: lookup("SKIP_VERIFY")
                .filter(|(_, v)| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
                .map(|(name, _)| name),
            server_name: lookup("TLS_SERVER_NAME").map(|(_, v)| v),
            client,
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
    /// The client certificate the container's CLI presents, if any.
    client: Option<Arc<ClientIdentity>>,
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
        let client = tls.client.clone().map(Arc::new);
        if let Some(client) = &client {
            // Refused here, not at the first handshake, naming the file.
            identity(client)?;
            tracing::debug!(certificate = %client.cert_file, "the direct transport presents the container's client certificate");
        }
        if let Some(var) = &tls.skip_verify {
            tracing::debug!(variable = %var, "the container sets {var}: the direct transport does not verify listener certificates either");
            return Ok(WorkloadTrust {
                check: Check::Skip,
                ca_file: var.clone(),
                name,
                client,
            });
        }
        let Some((var, path)) = &tls.ca_file else {
            return Err(format!(
                "the listener is TLS ({}) and the container names no CA (BAO_CACERT/VAULT_CACERT, *_CAPATH, or tls_client_ca_file in the listener stanza)",
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
        tracing::debug!(ca = %ca_file, certificates = roots.len(), "listener certificates are checked against the container's CA");
        Ok(WorkloadTrust {
            check: Check::Roots(Arc::new(roots)),
            ca_file,
            name,
            client,
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
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NodeError::Malformed(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            Some(client) => {
                let (chain, key) = identity(client).map_err(NodeError::Malformed)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    NodeError::Malformed(format!(
                        "the client certificate {} does not fit its key: {e}",
                        client.cert_file
                    ))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(PodTrust {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: names.swap_remove(0),
            pod: pod.to_owned(),
            ca_file: self.ca_file.clone(),
            client_file: self.client.as_ref().map(|c| c.cert_file.clone()),
        })
    }
}

/// The client certificate chain and key, parsed; errors name the
/// certificate file, never the key's content.
fn identity(
    client: &ClientIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_slice_iter(&client.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "the client certificate {} is not PEM: {e}",
                client.cert_file
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "the client certificate {} holds no certificate",
            client.cert_file
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.expose()).map_err(|_| {
        format!(
            "the client key beside {} holds no usable private key",
            client.cert_file
        )
    })?;
    Ok((chain, key))
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
    /// `BAO_CLIENT_CERT=/path` when a client certificate is presented.
    client_file: Option<String>,
}

impl PodTrust {
    /// The refusal of this client by the listener, when `e` (a failed
    /// handshake or request) carries the listener's alert about the client
    /// certificate: with TLS 1.3 it arrives only with the first answer.
    pub fn refused_client(&self, e: &(dyn std::error::Error + 'static)) -> Option<NodeError> {
        use rustls::AlertDescription as A;
        let mut cause = Some(e);
        while let Some(c) = cause {
            let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(rustls::Error::AlertReceived(
                alert @ (A::CertificateRequired
                | A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::UnsupportedCertificate
                | A::AccessDenied),
            )) = tls
            {
                return Some(NodeError::Untrusted(match &self.client_file {
                    Some(file) => format!(
                        "the listener of pod {} refused the client certificate {file} ({alert:?})",
                        self.pod
                    ),
                    None => format!(
                        "the listener of pod {} requires a client certificate ({alert:?}) and the container names none (BAO_CLIENT_CERT/BAO_CLIENT_KEY or the VAULT_ forms)",
                        self.pod
                    ),
                }));
            }
            cause = c.source();
        }
        None
    }

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
                if let Some(refused) = self.refused_client(&e) {
                    return refused;
                }
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
        assert!(refused.contains("names no CA"), "{refused}");
    }
}
