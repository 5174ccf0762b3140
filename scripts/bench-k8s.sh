#!/usr/bin/env bash
# The test control plane's start time and memory (docs/benchmarks.md §9):
# starts `netaware-lab cluster` N times (default 5), each with a fresh
# directory, and prints the seconds from start to the API server's /readyz
# and, for the last run, each process's resident memory once idle (10 s).
# Needs the binaries (scripts/k8s.sh) and a built netaware-lab.
#
#   scripts/bench-k8s.sh [N] [path/to/netaware-lab]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
lab=${2:-target/debug/netaware-lab}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq "$n"); do
    "$lab" cluster --dir "$dir/run" >"$dir/out" 2>"$dir/err" &
    pid=$!
    until grep -q "is up" "$dir/out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
        sleep 0.1
    done
    secs=$(sed -n 's/.*(ready in \([0-9.]*\) s.*/\1/p' "$dir/out")
    echo "run $i: ready in ${secs} s"
    if [ "$i" = "$n" ]; then
        sleep 10
        for p in etcd kube-apiserver kube-scheduler kube-controller-manager; do
            rss=$(ps -C "${p:0:15}" -o rss= | sort -n | tail -1)
            echo "  $p idle RSS $((rss / 1024)) MiB"
        done
    fi
    kill -INT "$pid"
    wait "$pid" || true
done
