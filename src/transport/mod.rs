//! How requests reach one Vault node: the Vault API through port-forward to
//! its listener (direct), or exec into its pod; `auto` picks per cluster.
//!
//! Owns the Kubernetes side of talking to servers: pod discovery and the
//! direct and exec transports. The operations layer sees only `VaultNode` and `VaultCluster`.

pub mod direct;
pub mod discover;
pub mod exec;
pub mod file_data;
pub mod forward;
pub mod init_copy;
pub mod pod;
pub mod probe;
pub mod scratch;
pub mod trust;
pub mod volume;

/// A Kubernetes client error as a short phrase for a message: the API
/// server's own message and code, or the innermost cause of a failed
/// connection; never the client's Debug dump of the Status.
pub fn api_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        kube::Error::Service(_) | kube::Error::HyperError(_) => {
            let mut cause: &(dyn std::error::Error + 'static) = e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("the API server could not be reached: {cause}")
        }
        other => other.to_string(),
    }
}
