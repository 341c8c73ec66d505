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

/// The CA shared by every cluster of this process.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
    client: Arc<rustls::ClientConfig>,
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
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = AUTHORITY.set(Authority {
        cert,
        key,
        client: Arc::new(client),
    });
    AUTHORITY.get().context("listener CA")
}

/// The folder the chart's `<sts>-tls` Secret is mounted from.
pub fn secret_dir(cluster_dir: &Path, name: &str) -> PathBuf {
    cluster_dir.join(format!("{name}-tls"))
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

/// The client the readiness probe uses: it trusts the listener CA.
pub fn probe_connector() -> Option<tokio_rustls::TlsConnector> {
    AUTHORITY
        .get()
        .map(|a| tokio_rustls::TlsConnector::from(a.client.clone()))
}
