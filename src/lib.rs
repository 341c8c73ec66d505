//! kubectl-vault: operate Vault and OpenBao clusters on Kubernetes without
//! ever losing a key.
//!
//! Dependencies point one way: `cli → cmd → {ops, transport, store, snapshot, output}`.
//! `ops` holds the Vault operations and knows nothing about Kubernetes;
//! `transport` reaches pods by exec; `store` keeps credentials in Secrets.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod cmd;
pub mod metrics;
pub mod ops;
pub mod output;
pub mod snapshot;
pub mod store;
pub mod transport;
