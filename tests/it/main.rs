//! The one integration test binary: the real plugin binary against sandbox
//! clusters of real OpenBao processes, with real kubectl and sops.

mod autounseal;
mod chart;
mod crash;
mod credentials;
mod defaults;
mod faults;
mod harness;
mod hook;
mod interleave;
mod lifecycle;
mod meet;
mod recipients;
mod release;
mod rotate;
mod snapshot;
mod sops;
