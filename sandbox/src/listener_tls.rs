//! TLS for the pods' own listeners (`--tls-listener`): one generated CA per
//! sandbox process and a certificate per pod start, as a chart user mounts
//! them through `extraVolumes` (a Secret at `/<app>/userconfig/<sts>-tls`).
//!
//! Owns the CA, the files (`<cluster dir>/<sts>-tls/ca.crt`, and per pod
//! `tls.crt`/`tls.key` in the pod folder) and the client the readiness probe
//! uses. A certificate's SANs are the pod's DNS names, its IP and 127.0.0.1.
//! What the server config and the container env say is `pod`'s business.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};

/// The CA shared by every cluster of this process, and the client
/// certificate it issued for containers (and the readiness probe) to
/// present where listeners require one.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
    client: Arc<rustls::ClientConfig>,
    client_cert_pem: String,
    client_key_pem: String,
    mtls_client: Arc<rustls::ClientConfig>,
}

static AUTHORITY: OnceLock<Authority> = OnceLock::new();

fn new_ca(common_name: &str) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate().context("generate CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).context("self-sign CA")?;
    Ok((cert, key))
}

fn authority() -> anyhow::Result<&'static Authority> {
    if let Some(a) = AUTHORITY.get() {
        return Ok(a);
    }
    let (cert, key) = new_ca("kube-sandbox-listener-ca")?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.der().to_vec()))
        .context("trust the listener CA")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let client_key = KeyPair::generate().context("generate client key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("client params")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-sandbox-client");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params
        .signed_by(&client_key, &cert, &key)
        .context("sign the client certificate")?;
    let mtls_client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from(
                client_cert.der().to_vec(),
            )],
            rustls::pki_types::PrivateKeyDer::try_from(client_key.serialize_der())
                .map_err(|e| anyhow::anyhow!("client key: {e}"))?,
        )
        .context("client certificate")?;
    let _ = AUTHORITY.set(Authority {
        cert,
        key,
        client: Arc::new(client),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
        mtls_client: Arc::new(mtls_client),
    });
    AUTHORITY.get().context("listener CA")
}

/// The folder the chart's `<sts>-tls` Secret is mounted from.
pub fn secret_dir(cluster_dir: &Path, name: &str) -> PathBuf {
    cluster_dir.join(format!("{name}-tls"))
}

/// The folder a chart user mounts the client certificate Secret
/// (`<sts>-client-tls`) from, apart from the CA so that `*_CAPATH` holds
/// only certificates.
pub fn client_dir(cluster_dir: &Path, name: &str) -> PathBuf {
    cluster_dir.join(format!("{name}-client-tls"))
}

/// `tls.crt` and `tls.key` of the containers' client certificate.
pub fn client_files(cluster_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = client_dir(cluster_dir, name);
    (dir.join("tls.crt"), dir.join("tls.key"))
}

/// The CA file every pod's CLI trusts (`BAO_CACERT`).
pub fn ca_file(cluster_dir: &Path, name: &str) -> PathBuf {
    secret_dir(cluster_dir, name).join("ca.crt")
}

/// Writes the CA file and a certificate for one pod (`tls.crt`, `tls.key`
/// in `pod_dir`), valid for `dns_names`, `ip` and 127.0.0.1.
pub fn issue(
    cluster_dir: &Path,
    name: &str,
    pod_dir: &Path,
    dns_names: Vec<String>,
    ip: Ipv4Addr,
) -> anyhow::Result<()> {
    let ca = authority()?;
    let dir = secret_dir(cluster_dir, name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(ca_file(cluster_dir, name), ca.cert.pem())?;
    sign_into(pod_dir, dns_names, ip, &ca.cert, &ca.key)
}

/// Writes the containers' client certificate and key (the key readable by
/// its owner only, as a Secret volume with `defaultMode: 0400` mounts it).
pub fn issue_client(cluster_dir: &Path, name: &str) -> anyhow::Result<()> {
    let ca = authority()?;
    std::fs::create_dir_all(client_dir(cluster_dir, name))?;
    let (crt, key) = client_files(cluster_dir, name);
    std::fs::write(&crt, &ca.client_cert_pem)?;
    std::fs::write(&key, &ca.client_key_pem)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400))?;
    if crate::pod::running_as_root() {
        // As kubelet hands a Secret volume to the pod's fsGroup.
        for f in [&crt, &key] {
            std::os::unix::fs::chown(
                f,
                Some(crate::pod::CONTAINER_UID),
                Some(crate::pod::CONTAINER_GID),
            )?;
        }
    }
    Ok(())
}

/// Replaces pod `pod_dir`'s certificate with one from a CA nobody trusts
/// (takes effect when the server restarts).
pub fn issue_from_foreign_ca(
    pod_dir: &Path,
    dns_names: Vec<String>,
    ip: Ipv4Addr,
) -> anyhow::Result<()> {
    let (cert, key) = new_ca("someone-elses-ca")?;
    sign_into(pod_dir, dns_names, ip, &cert, &key)
}

fn sign_into(
    pod_dir: &Path,
    dns_names: Vec<String>,
    ip: Ipv4Addr,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> anyhow::Result<()> {
    let key = KeyPair::generate().context("generate listener key")?;
    let mut params = CertificateParams::new(dns_names).context("listener cert params")?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(ip)));
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let cert = params
        .signed_by(&key, ca, ca_key)
        .context("sign listener certificate")?;
    let (crt, k) = files(pod_dir);
    std::fs::write(&crt, cert.pem())?;
    std::fs::write(&k, key.serialize_pem())?;
    use std::os::unix::fs::PermissionsExt;
    for f in [&crt, &k] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// `tls.crt` and `tls.key` of a pod.
pub fn files(pod_dir: &Path) -> (PathBuf, PathBuf) {
    (pod_dir.join("tls.crt"), pod_dir.join("tls.key"))
}

/// The client the readiness probe uses: it trusts the listener CA, and
/// presents the client certificate where listeners require one.
pub fn probe_connector(client_auth: bool) -> Option<tokio_rustls::TlsConnector> {
    AUTHORITY.get().map(|a| {
        tokio_rustls::TlsConnector::from(if client_auth {
            a.mtls_client.clone()
        } else {
            a.client.clone()
        })
    })
}
