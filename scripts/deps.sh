# Sourced by lab.sh and test.sh: what a fresh Debian machine needs beyond
# Rust, installed only when missing (quiet, idempotent).

# Debian packages for building: a C compiler and linker (ring, the linker
# of every crate).
BUILD_PACKAGES=(gcc libc6-dev)
# The lab: ip/tc (iproute2), unshare (util-linux), ps (procps).
LAB_PACKAGES=(iproute2 util-linux procps)
# The tests, beyond the lab: ping and iperf3 (the lab compares against
# them), Open MPI with mpi4py (the all-reduce benchmark), promtool (checks
# /metrics), Python with venv (Helm's engine renders the chart),
# ca-certificates (scripts/k8s.sh fetches Go and modules over HTTPS),
# Chromium with chromedriver (the browser test of `netaware ui`).
TEST_PACKAGES=(iputils-ping iperf3 openmpi-bin python3-mpi4py prometheus python3 python3-venv ca-certificates chromium chromium-driver)
# The container images: musl-gcc (ring's C code for the static musl
# target), ca-certificates (the bundle the images ship), coreutils' chroot
# (runs each entrypoint from its unpacked layer).
IMAGE_PACKAGES=(musl-tools ca-certificates coreutils)
# Helm v4's engine for Python, pinned.
HELM_SDK_VERSION=0.2.2

say() { printf '%s\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

# Install the Debian packages given that are not installed yet.
need_debian_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! is_root; then
        say "missing Debian packages: ${missing[*]}"
        say "run this as root, or first: sudo apt-get install ${missing[*]}"
        return 1
    fi
    say "== installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local log
    log=$(mktemp)
    # Quiet when it works; everything apt said when it does not.
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        say "installing ${missing[*]} failed (apt's output above)"
        return 1
    fi
    rm -f "$log"
}

# A virtualenv with helm-python-sdk, cached per version; prints its python.
helm_python() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/netaware/python-helm-sdk-$HELM_SDK_VERSION"
    if ! "$venv/bin/python" -c 'import helm_python' 2>/dev/null; then
        say "== installing helm-python-sdk $HELM_SDK_VERSION into $venv"
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q --disable-pip-version-check "helm-python-sdk==$HELM_SDK_VERSION" >&2
    fi
    printf '%s\n' "$venv/bin/python"
}
