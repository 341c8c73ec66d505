//! A Kubernetes API server double whose pods are real OpenBao processes.
//!
//! `Cluster::start` serves the real wire protocol (discovery, pods, exec and
//! port-forward over WebSocket, Secrets, Leases, Events, Services,
//! server-side apply, and optionally metrics.k8s.io PodMetrics)
//! over HTTP or HTTPS, so real kubectl and kube-rs work against it, while each
//! pod `NAME-i` is a `bao server` with raft storage on its own loopback IP.
//! Faults (failing Secret writes, dropped exec streams, latency, RBAC denials,
//! pod restarts and data loss) are injected through the handle or the
//! `kube-sandbox` CLI.
//!
//! Module map: `options` (what to start) → `cluster` (the handle) → `state`
//! (shared parts) → `fleet`/`pod`/`spawner` (processes), `store`/`kinds`/
//! `patch` (objects), `usage` (what a pod's process uses), `api` (HTTP),
//! `control`/`faults` (operator actions).

mod api;
mod audit;
mod cluster;
mod control;
mod faults;
mod fleet;
mod kinds;
mod kubeconfig;
mod listener_tls;
mod loopback;
mod managed;
mod meta;
mod options;
mod patch;
mod pod;
mod protobuf;
mod render;
mod seal;
mod selector;
mod spawner;
mod state;
mod status;
mod store;
mod table;
mod tls;
mod transit;
mod usage;

pub use cluster::Cluster;
pub use control::Control;
pub use faults::SecretFault;
pub use options::{
    ClusterOptions, Flavour, ListenerCa, PodManagement, Reconfigure, SealIn, Storage,
};
pub use pod::{running_as_root, API_PORT, CLUSTER_PORT};
pub use seal::Seal;
pub use tls::install_default_crypto_provider;
