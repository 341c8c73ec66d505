//! Where credentials live: Kubernetes Secrets (plain JSON or a SOPS
//! envelope), the Lease that serializes operations, and local files.
//!
//! Owns persistence only. What a document means and when it is written is
//! decided in `ops`.

pub mod dr_state;
pub mod envelope;
pub mod kube_secret;
pub mod lease;
pub mod local_file;
pub mod manifest;
pub mod sops;
