//! The maths of netaware, with no I/O: no async runtime, no gRPC, no
//! Kubernetes. Every function that depends on time takes `now`; the
//! aggregator (the I/O shell) owns the clock, the sockets and the API
//! server, and calls in here.
//!
//! ```text
//! windows ──▶ matrix ──▶ infer ──▶ groups  (nested latency groups)
//!                          │   └─▶ quality (per-node score)
//!                          └─────▶ labels  (what every Node should carry)
//!             matrix ──▶ place   (which k nodes; place::diameter is the search)
//!             bandwidth          (which pair to test next, within a byte budget)
//! ```
//!
//! The wire types of `netaware-proto` (messages only, without its gRPC
//! stubs) are the matrix's data: a window is stored as it arrived.

pub mod bandwidth;
mod error;
pub mod groups;
pub mod infer;
pub mod labels;
pub mod matrix;
pub mod place;
pub mod plan;
pub mod quality;
pub mod settle;
pub mod shape;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod validate;

pub use error::{Error, Result};
