#!/usr/bin/env bash
# Dependency policy (deny.toml): licences, duplicate versions, sources, and
# the RustSec advisories when their database can be fetched. cargo-deny is
# built once per version and kept under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

DENY_VERSION=0.20.2
root="${XDG_CACHE_HOME:-$HOME/.cache}/netaware/cargo-deny-$DENY_VERSION"
if [ ! -x "$root/bin/cargo-deny" ]; then
    say "== building cargo-deny $DENY_VERSION into $root (once)"
    cargo install -q cargo-deny --version "$DENY_VERSION" --locked --root "$root"
fi
deny="$root/bin/cargo-deny"

"$deny" --all-features check licenses bans sources
# The advisory database is a git repository on GitHub; where that cannot be
# reached (this project's build machines reach only package registries) the
# check says so loudly instead of passing as if it had run.
if "$deny" fetch db >/dev/null 2>&1; then
    "$deny" --all-features check --disable-fetch advisories
else
    say "SKIPPED advisories: the RustSec advisory database could not be fetched (no route to it from here)"
fi
