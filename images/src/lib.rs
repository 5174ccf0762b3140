//! netaware's container images, built without a container engine: each
//! image is one layer holding a static (musl) binary, written as an OCI
//! image layout that registries and tools (`skopeo copy oci:…`,
//! `crane push`, `podman load`) take as it is.
//!
//! - [`spec`]: what each image holds (name, binary, user, entrypoint,
//!   capabilities), the one definition the Dockerfile and the chart are
//!   checked against;
//! - [`layout`]: writing an image (layer tar, config, manifest, index);
//! - [`check`]: reading an image back and verifying it, down to running its
//!   entrypoint from the unpacked layer.

pub mod check;
mod error;
pub mod layout;
pub mod spec;

pub use error::{Error, Result};
