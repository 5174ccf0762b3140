#!/usr/bin/env bash
# Build netaware and run the emulated lab. On a fresh Debian machine with
# only Rust, as root: installs what the lab needs (only what is missing).
#
#   ./lab.sh                   the two-region demo: 4 nodes, 60 s
#   ./lab.sh ARGS              netaware-lab ARGS, e.g.
#                              ./lab.sh up lab/topologies/geo-12.yaml
#                              ./lab.sh bench lab/topologies/geo-12.yaml -k 4
#
# `bench` also needs Open MPI and mpi4py: ./test.sh --install-only brings them.
# Labels go to a real Kubernetes control plane when scripts/k8s.sh has built
# it (./test.sh does), else to the API server double (the lab says which).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh

if ! is_root; then
    say "the lab builds network namespaces and needs root: sudo ./lab.sh $*"
    exit 1
fi
need_debian_packages "${BUILD_PACKAGES[@]}" "${LAB_PACKAGES[@]}"
cargo build --release --workspace --locked
if [ $# -eq 0 ]; then
    set -- run lab/topologies/two-region.yaml --for 60s
fi
exec ./target/release/netaware-lab "$@"
