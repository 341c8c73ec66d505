//! One pod's machinery: its folder, loopback IP, server config, exec
//! environment and health probe.
//!
//! Owns the on-disk layout `<dir>/pods/NAME-i/{data,config.hcl,server.log,bin,ip}`
//! and how a `bao server` and an exec'd command are launched. Which pods exist
//! and when they start is decided by [`crate::fleet`].
//!
//! By noun: `layout` (the folder), `server` (its config and command),
//! `container` (the container user and an exec's environment), `network`
//! (ports and loopback IP) and `health` (the probe); here, the pod as the
//! API reports it.

mod container;
mod health;
mod layout;
mod network;
mod server;

use std::net::Ipv4Addr;

use k8s_openapi::jiff::Timestamp;

pub use container::{exec_env, running_as_root, ContainerKind, CONTAINER_GID, CONTAINER_UID};
pub use health::Health;
pub use layout::PodLayout;
pub use network::{allocate_ip, is_listening, API_PORT, CLUSTER_PORT};
pub use server::listener_names;

/// One pod as the API reports it.
#[derive(Clone, Debug)]
pub struct PodView {
    /// Ordinal in the StatefulSet.
    pub ordinal: u32,
    /// `NAME-i`.
    pub name: String,
    /// metadata.uid.
    pub uid: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// metadata.creationTimestamp.
    pub created: Timestamp,
    /// state.running.startedAt of the main container.
    pub started_at: Timestamp,
    /// Main container restarts.
    pub restart_count: u32,
    /// Cached health.
    pub health: Health,
    /// Whether the server process is alive.
    pub running: bool,
    /// metadata.resourceVersion.
    pub resource_version: u64,
    /// Server pid, if running.
    pub pid: Option<u32>,
    /// Created but not started yet: phase Pending, no IP, containers
    /// waiting in ContainerCreating.
    pub pending: bool,
    /// metadata.deletionTimestamp: deleted, still Running while it terminates.
    pub deleting: Option<Timestamp>,
}
