//! netaware-lab: an emulated geo-distributed cluster on one Linux host.
//!
//! One network namespace per node, a userspace link emulator over TUN devices
//! (per-pair delay, jitter, loss; `htb` for bandwidth), the real aggregator
//! and one real agent per node. See `docs/lab.md`.

pub mod bench;
pub mod cluster;
mod emulator;
mod error;
pub mod lab;
mod netns;
pub mod report;
pub mod scale;
mod sidecar;
pub mod topology;

pub use error::{Error, Result};
