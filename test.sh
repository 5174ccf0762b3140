#!/usr/bin/env bash
# netaware's test command. On a fresh Debian machine with only Rust, as
# root: installs the Debian and Python packages the tests need (only those
# missing), builds the real Kubernetes control plane the tests run against
# (scripts/k8s.sh: once per version, about 15 minutes on 2 cores the first
# time, cached in ~/.cache/netaware), then runs every test, the root-only
# lab tests included.
#
#   ./test.sh                  install what is missing, run all tests
#   ./test.sh --install-only   install what is missing, run nothing
#   ./test.sh -- ARGS          extra arguments for the test binaries
#
# Not as root, nothing is installed and the lab tests are left out (cargo
# lists them as ignored, and this script says so).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh

install_only=false
if [ "${1:-}" = "--install-only" ]; then
    install_only=true
    shift
fi
[ "${1:-}" = "--" ] && shift

if is_root; then
    need_debian_packages "${BUILD_PACKAGES[@]}" "${LAB_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    NETAWARE_PYTHON=$(helm_python)
    export NETAWARE_PYTHON
else
    need_debian_packages "${BUILD_PACKAGES[@]}" "${LAB_PACKAGES[@]}" "${TEST_PACKAGES[@]}" ||
        say "(going on: tests that need them fail or say SKIPPED)"
fi
# The real control plane (etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager). Without it the Kubernetes tests fail in CI and
# say SKIPPED elsewhere.
if NETAWARE_K8S_BIN=$(scripts/k8s.sh); then
    export NETAWARE_K8S_BIN
else
    say "(could not build the Kubernetes control plane: the tests that need it fail in CI, say SKIPPED elsewhere)"
fi
$install_only && exit 0

if is_root; then
    cargo test --workspace --locked -- --include-ignored "$@"
else
    say "SKIPPED: the lab tests need root (network namespaces); run ./test.sh as root to include them"
    cargo test --workspace --locked -- "$@"
fi
