//! The API server's TLS material: a generated CA and a server certificate
//! for 127.0.0.1/localhost.
//!
//! Owns certificate generation and the rustls acceptor (HTTP/1.1 only);
//! clients trust the CA through the kubeconfig's `certificate-authority-data`.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and the server certificate it signed.
pub struct TlsMaterial {
    /// CA certificate, PEM (goes into the kubeconfig).
    pub ca_pem: String,
    /// The acceptor serving the server certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// Generates a CA and a server certificate valid for 127.0.0.1, ::1 and localhost.
pub fn generate() -> anyhow::Result<TlsMaterial> {
    let ca_key = KeyPair::generate().context("generate CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-sandbox-ca");
    ca_params.distinguished_name = dn;
    let ca = ca_params.self_signed(&ca_key).context("self-sign CA")?;

    let key = KeyPair::generate().context("generate server key")?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_string()]).context("server params")?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from(
            std::net::Ipv6Addr::LOCALHOST,
        )));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    params.distinguished_name = dn;
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .context("sign server certificate")?;

    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .context("TLS server config")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    })
}

/// Makes ring the process's rustls provider, so clients built without an
/// explicit provider (kube's) work even when another crate in the same
/// binary compiles a second provider in. Idempotent.
pub fn install_default_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
