#!/usr/bin/env bash
# Fuzz everything netaware parses from the network or a file (fuzz/):
#   scripts/fuzz.sh                  every target for 30 s (what CI runs)
#   scripts/fuzz.sh --runs 10000000  every target for that many executions
#   scripts/fuzz.sh --runs N TARGET  one target
# cargo-fuzz needs a nightly toolchain (for the sanitizer); without one this
# says SKIPPED and exits 0, as a test that cannot run here must. cargo-fuzz
# and the fuzz build are kept under ~/.cache, keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

FUZZ_VERSION=0.13.2
TARGETS=(stamp_packet icmp_reply agent_message topology_yaml label_selector)

budget=(-max_total_time=30)
if [ "${1:-}" = "--runs" ]; then
    budget=(-runs="$2")
    shift 2
fi
if [ $# -gt 0 ]; then
    TARGETS=("$@")
fi

if ! nightly=$(rustc +nightly --version 2>/dev/null); then
    say "SKIPPED fuzzing: no nightly Rust toolchain here (cargo fuzz needs one for its sanitizer); install one with: rustup toolchain install nightly"
    exit 0
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/netaware"
root="$cache/cargo-fuzz-$FUZZ_VERSION"
if [ ! -x "$root/bin/cargo-fuzz" ]; then
    say "== building cargo-fuzz $FUZZ_VERSION into $root (once)"
    cargo install -q cargo-fuzz --version "$FUZZ_VERSION" --locked --root "$root"
fi
# One build directory per nightly, so a warm run only links.
key=$(echo "$nightly" | tr -c 'A-Za-z0-9.\n-' '_')
export CARGO_TARGET_DIR="$cache/fuzz-target-$key"

cd fuzz
export PATH="$root/bin:$PATH"
for t in "${TARGETS[@]}"; do
    say "== fuzzing $t (${budget[*]})"
    # Each target's corpus lives outside the repository, with the build.
    corpus="$CARGO_TARGET_DIR/corpus/$t"
    log="$CARGO_TARGET_DIR/$t.log"
    mkdir -p "$corpus"
    if ! cargo +nightly fuzz run --release "$t" "$corpus" -- "${budget[@]}" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        # A crash leaves its input in fuzz/artifacts/.
        echo "FAILED: $t (build error or crash; crash inputs in fuzz/artifacts/$t: turn each into a unit test)" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done ' "$log" || true
done
