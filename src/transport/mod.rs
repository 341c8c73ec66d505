//! How requests reach one Vault node: exec into its pod (the default) or
//! port-forward to its listener.
//!
//! Owns the Kubernetes side of talking to servers: pod discovery and the exec
//! transport. The operations layer sees only `VaultNode` and `VaultCluster`.

pub mod discover;
pub mod exec;
pub mod init_copy;
pub mod pod;
pub mod portforward;
