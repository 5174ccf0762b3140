#!/usr/bin/env bash
# Build netaware's container images without a container engine, then check
# them. Static (musl) binaries, one OCI image layout per binary under
# target/images/<name> (push with `skopeo copy oci:target/images/NAME
# docker://REGISTRY/NAME:TAG` or `crane push`).
#
#   scripts/images.sh            build and check (as root the check also
#                                runs every entrypoint from its layer)
#
# The musl build is kept under ~/.cache, keyed by the Rust release, so a
# second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

TARGET=x86_64-unknown-linux-musl
need_debian_packages "${BUILD_PACKAGES[@]}" "${IMAGE_PACKAGES[@]}"
if ! rustup target list --installed | grep -qx "$TARGET"; then
    say "== adding the Rust target $TARGET"
    rustup target add "$TARGET" >&2
fi
rust=$(rustc --version | awk '{print $2}')
target_dir="${XDG_CACHE_HOME:-$HOME/.cache}/netaware/target-images-$rust"

say "== static binaries ($TARGET, profile image)"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build -q --locked --profile image --target "$TARGET" \
    --target-dir "$target_dir" -p netaware-agent -p netaware-aggregator -p netaware-cli
bins="$target_dir/$TARGET/image"

say "== OCI images"
cargo run -q --locked -p netaware-images -- build --bin-dir "$bins" --out target/images
run=()
if is_root; then
    run=(--run)
else
    say "SKIPPED running the entrypoints from their layers: chroot needs root"
fi
cargo run -q --locked -p netaware-images -- check --out target/images "${run[@]}"
