//! Helpers for the end-to-end tests: where the workspace's binaries are, and
//! whether this process may build a lab.

pub mod apiserver;

use std::path::PathBuf;

/// The directory cargo put the workspace's binaries in (`target/<profile>`):
/// the test executable lives in its `deps/` subdirectory.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Path of a workspace binary; panics with a fix when it is not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built; run `cargo build --workspace` (or `cargo test --workspace`, which builds every binary)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Whether we are root (the lab needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(17401)
}

/// Two-sided 99 % bound on the number of lost packets out of `n` with loss
/// probability `p` (normal approximation of the binomial, z = 2.576).
pub fn binomial_99(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let half = 2.576 * sd;
    ((mean - half).max(0.0), mean + half)
}
