//! The one integration test binary: the real plugin binary against sandbox
//! clusters of real OpenBao processes, with real kubectl and sops.

mod api_errors;
mod autounseal;
mod chart;
mod crash;
mod credentials;
mod defaults;
mod dr;
mod events;
mod faults;
mod harness;
mod hints;
mod hook;
mod interleave;
mod lifecycle;
mod meet;
pub(crate) mod metrics;
mod migrate;
mod pod_deletion;
mod recipients;
mod release;
mod rotate;
mod snapshot;
mod sops;
mod terminal;
mod tls;
mod transport;
mod usage;
