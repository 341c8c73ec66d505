//! The one integration test binary: the real plugin binary against sandbox
//! clusters of real OpenBao processes, with real kubectl and sops.

mod crash;
mod faults;
mod harness;
mod lifecycle;
mod sops;
