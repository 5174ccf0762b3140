//! What each image holds. The Dockerfile (for people who build with
//! Docker) and the chart (which runs the images) are checked against this
//! table by tests.

/// Where the binary goes.
pub const BIN_DIR: &str = "/usr/local/bin";
/// The user every image runs as: distroless' `nonroot`, as the chart's
/// `runAsUser`/`runAsGroup` say.
pub const USER: &str = "65532:65532";
/// The CPU architecture of the static binaries.
pub const ARCH: &str = "amd64";
/// The Rust target the binaries are built for: static, no libc needed.
pub const RUST_TARGET: &str = "x86_64-unknown-linux-musl";

/// One image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpec {
    /// Image name (the chart pulls `<repository>/<name>:<tag>`).
    pub name: &'static str,
    /// The binary, under [`BIN_DIR`].
    pub binary: &'static str,
    /// The Dockerfile's target for the same image.
    pub docker_target: &'static str,
    /// The binary carries CAP_NET_RAW as a file capability (ICMP probing as
    /// a non-root user; the pod must allow it, as the chart does).
    pub net_raw: bool,
    /// What the image does, for its description label.
    pub description: &'static str,
    /// Largest compressed size accepted (bytes): a growing image is a
    /// change someone should notice.
    pub max_bytes: u64,
}

impl ImageSpec {
    /// The entrypoint: the binary's full path.
    pub fn entrypoint(&self) -> String {
        format!("{BIN_DIR}/{}", self.binary)
    }
}

/// Every image netaware ships.
pub const IMAGES: [ImageSpec; 3] = [
    ImageSpec {
        name: "netaware-agent",
        binary: "netaware-agent",
        docker_target: "agent",
        net_raw: true,
        description: "netaware node agent: measures RTT, jitter, loss and bandwidth to peer nodes",
        // 2.3 MiB on 2026-12-02.
        max_bytes: 4 << 20,
    },
    ImageSpec {
        name: "netaware-aggregator",
        binary: "netaware-aggregator",
        docker_target: "aggregator",
        net_raw: false,
        description: "netaware aggregator: link-state matrix, Node labels, placement queries",
        // 5.5 MiB on 2026-12-02.
        max_bytes: 8 << 20,
    },
    ImageSpec {
        name: "netaware",
        binary: "netaware",
        docker_target: "cli",
        net_raw: false,
        description: "netaware command-line client",
        // 1.5 MiB on 2026-12-02.
        max_bytes: 3 << 20,
    },
];

/// The `security.capability` extended attribute that grants CAP_NET_RAW,
/// effective and permitted (`setcap cap_net_raw+ep`): Linux's
/// `vfs_cap_data`, revision 2, little-endian.
pub fn net_raw_capability() -> [u8; 20] {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;
    const CAP_NET_RAW: u32 = 13;
    let words = [
        VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE,
        1 << CAP_NET_RAW, // permitted, capabilities 0–31
        0,                // inheritable, 0–31
        0,                // permitted, 32–63
        0,                // inheritable, 32–63
    ];
    let mut out = [0u8; 20];
    for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
