#!/usr/bin/env bash
# Build a real Kubernetes control plane from the Go module proxy, once per
# version, into ~/.cache/netaware/k8s-<version>/: kube-apiserver,
# kube-scheduler and kube-controller-manager from k8s.io/kubernetes, and
# etcd from its server module. Prints the directory.
#
# `go install k8s.io/kubernetes/cmd/...@v` fails: kubernetes' go.mod
# replaces its staging modules (k8s.io/api, apimachinery, client-go, ...)
# with ./staging/... paths that a module download does not have. So a small
# wrapper module requires k8s.io/kubernetes and replaces each staging module
# with its published v0.X.Y, read from kubernetes' own go.mod.
#
# The versions are in scripts/k8s.env (with why). Go itself: the one on PATH
# when it is new enough, else the toolchain from the module proxy (what
# GOTOOLCHAIN=auto fetches), cached too; so a machine with nothing but
# Python needs no other download.
#
#   scripts/k8s.sh         build what is missing; print the directory
#   scripts/k8s.sh --go    make sure a new enough Go is there; print its version
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=k8s.env
source scripts/k8s.env
cache="${XDG_CACHE_HOME:-$HOME/.cache}/netaware"
out="$cache/k8s-$K8S_VERSION"
bins=(kube-apiserver kube-scheduler kube-controller-manager etcd)

say() { echo "$@" >&2; }

# Put a Go of at least $GO_VERSION first on PATH.
need_go() {
    local have
    have=$(go env GOVERSION 2>/dev/null || true)
    if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "go$GO_VERSION" "$have" | sort -V | head -1)" = "go$GO_VERSION" ]; then
        return 0
    fi
    local dir="$cache/go-$GO_VERSION"
    if [ ! -x "$dir/bin/go" ]; then
        local arch proxy
        arch=$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
        proxy=${GOPROXY:-https://proxy.golang.org}
        proxy=${proxy%%,*}
        say "== fetching Go $GO_VERSION from $proxy (Go on PATH: ${have:-none})"
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        python3 - "$proxy/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$arch.zip" "$dir.tmp" <<'PY'
import io, os, sys, urllib.request, zipfile
url, dest = sys.argv[1], sys.argv[2]
data = urllib.request.urlopen(url, timeout=300).read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    for info in z.infolist():
        z.extract(info, dest)
        mode = info.external_attr >> 16
        if mode:  # the zip keeps Unix modes; extract() drops them
            os.chmod(os.path.join(dest, info.filename), mode & 0o777)
PY
        mv "$dir.tmp"/golang.org/toolchain@*/ "$dir"
        rm -rf "$dir.tmp"
    fi
    export PATH="$dir/bin:$PATH"
}

if [ "${1:-}" = "--go" ]; then
    need_go
    go version
    exit 0
fi

have_all() {
    for b in "${bins[@]}"; do
        [ -x "$out/$b" ] || return 1
    done
}
if have_all; then
    echo "$out"
    exit 0
fi

need_go
mkdir -p "$out"
work="$cache/k8s-build-$K8S_VERSION"
mkdir -p "$work"
export GOFLAGS=-mod=mod
# Go's build and module caches live beside the binaries, keyed by version:
# one place to look, and deleting ~/.cache/netaware removes all of it.
export GOCACHE="$cache/go-build-$K8S_VERSION" GOMODCACHE="$cache/go-mod"
started=$(date +%s)

# kubernetes' own go.mod: the staging modules it replaces.
gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$gomod" ] || { say "cannot download k8s.io/kubernetes@$K8S_VERSION from the module proxy"; exit 1; }
go_line=$(grep -m1 '^go ' "$gomod")
staging_version="v0.${K8S_VERSION#v1.}"
staging=$(sed -n 's#^\s*\(k8s\.io/[a-z0-9./-]*\) => \./staging/.*#\1#p' "$gomod" | sort -u)
[ -n "$staging" ] || { say "no staging replacements found in $gomod"; exit 1; }
say "== k8s $K8S_VERSION: $(echo "$staging" | wc -l) staging modules at $staging_version ($go_line)"

{
    echo "module netaware.local/k8s-build"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for m in $staging; do
        echo "replace $m => $m $staging_version"
    done
} >"$work/go.mod"

# What /version reports (kubernetes' own build stamps these).
minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
v=k8s.io/component-base/version
version_flags="-X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"

cd "$work"
for cmd in kube-apiserver kube-scheduler kube-controller-manager; do
    if [ ! -x "$out/$cmd" ]; then
        say "== building $cmd (a cold build takes minutes and about 2.5 GB of memory)"
        go get "k8s.io/kubernetes/cmd/$cmd@$K8S_VERSION" >&2
        CGO_ENABLED=0 go build -trimpath -ldflags "$version_flags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
        mv "$out/$cmd.tmp" "$out/$cmd"
    fi
done

# etcd: the module proxy does not serve its root module (the etcd
# command), so a three-line main calls the server module's etcdmain, as
# the root module does.
if [ ! -x "$out/etcd" ]; then
    say "== building etcd $ETCD_VERSION"
    ework="$cache/etcd-build-$ETCD_VERSION"
    mkdir -p "$ework"
    (
        cd "$ework"
        cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
        printf 'module netaware.local/etcd-build\n\n%s\n' "$go_line" >go.mod
        go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
        go mod tidy >&2
        CGO_ENABLED=0 go build -trimpath -o "$out/etcd.tmp" . >&2
        mv "$out/etcd.tmp" "$out/etcd"
    )
fi

have_all || { say "the build finished without every binary in $out"; exit 1; }
# The build cache (about 4 GB) only served this build: a new version gets a
# directory of its own anyway.
rm -rf "$GOCACHE"
say "== control plane $K8S_VERSION built in $(( $(date +%s) - started )) s into $out"
echo "$out"
