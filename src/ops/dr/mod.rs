//! Disaster recovery across clusters: one primary and warm standbys that
//! share a snapshot location.
//!
//! Owns the DR group's description ([`config`]), the shared DR state and its
//! conditional writes ([`state`]), the choice of the best standby
//! ([`score`]), the figures a cluster is scored on ([`probe`]) and sealing a
//! whole cluster ([`fence`]). Restoring data into a standby is
//! [`crate::ops::restore`]'s job; nothing here restores. Kubernetes (which
//! context reaches which cluster) is the command layer's business.

pub mod config;
pub mod fence;
pub mod probe;
pub mod score;
pub mod state;
