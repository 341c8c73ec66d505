//! Vault/OpenBao operations as state machines over [`node::VaultNode`],
//! [`cluster::VaultCluster`] and [`store::CredentialStore`].
//!
//! Owns what happens in which order and what a crash at each step boundary
//! leaves behind. Knows nothing about Kubernetes, terminals or prompts.

pub mod checkpoint;
pub mod cluster;
pub mod converge;
pub mod credentials;
#[cfg(test)]
pub(crate) mod double;
pub mod dr;
pub mod import;
pub mod init;
pub mod keyring;
pub mod migrate;
pub mod node;
pub mod operation;
pub mod peers;
pub mod reconcile;
pub mod recover;
pub mod restore;
pub mod restore_test;
pub mod rotate;
pub mod seal;
pub mod secret;
pub mod snapshot_save;
pub mod status;
pub mod store;
pub mod unseal;
pub mod wait;
