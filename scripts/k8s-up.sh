#!/usr/bin/env bash
# Start a real control plane on loopback, for development: etcd,
# kube-apiserver (secure port, generated serving certificate, a
# ServiceAccount signing key so TokenRequest/TokenReview work, Node and RBAC
# authorizers, admission as shipped, ValidatingAdmissionPolicy included),
# kube-scheduler and kube-controller-manager (node-lifecycle controller off:
# no kubelet sends heartbeats). No container engine, no kubelet.
#
#   scripts/k8s-up.sh DIR    start in DIR (state, logs, admin.kubeconfig);
#                            prints DIR/admin.kubeconfig once /readyz is ok
#   scripts/k8s-up.sh --down DIR
#
# The binaries come from scripts/k8s.sh (built once per version).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--down" ]; then
    dir=$2
    pids=$(cat "$dir"/*.pid 2>/dev/null || true)
    [ -n "$pids" ] || exit 0
    kill $pids 2>/dev/null || true
    # The API server drains for a while; 10 s, then it is killed.
    for _ in $(seq 20); do
        kill -0 $pids 2>/dev/null || exit 0
        sleep 0.5
    done
    kill -9 $pids 2>/dev/null || true
    exit 0
fi
dir=$(mkdir -p "$1" && cd "$1" && pwd)
bin=$(scripts/k8s.sh)
mkdir -p "$dir/logs" "$dir/pki"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port)
etcd_peer=$(free_port)
api_port=$(free_port)

# The ServiceAccount signing key and the admin's static token (setup only).
[ -f "$dir/pki/sa.key" ] || openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null
token=$(openssl rand -hex 24)
echo "$token,admin,admin,system:masters" >"$dir/pki/tokens.csv"

"$bin/etcd" --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer" --name default \
    >"$dir/logs/etcd.log" 2>&1 &
echo $! >"$dir/etcd.pid"

"$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$dir/pki" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/pki/sa.pub" --service-account-signing-key-file "$dir/pki/sa.key" \
    --api-audiences https://kubernetes.default.svc \
    --token-auth-file "$dir/pki/tokens.csv" \
    --authorization-mode Node,RBAC \
    --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none \
    >"$dir/logs/kube-apiserver.log" 2>&1 &
echo $! >"$dir/kube-apiserver.pid"

cat >"$dir/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: netaware
  cluster:
    server: https://127.0.0.1:$api_port
    insecure-skip-tls-verify: true
contexts:
- name: netaware
  context: {cluster: netaware, user: admin}
current-context: netaware
users:
- name: admin
  user: {token: $token}
EOF

started=$(date +%s)
until curl -sk -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" 2>/dev/null | grep -q '^ok$'; do
    if ! kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then
        echo "kube-apiserver exited: $(grep -m1 'command failed' "$dir/logs/kube-apiserver.log")" >&2
        exit 1
    fi
    if [ $(( $(date +%s) - started )) -gt 60 ]; then
        echo "kube-apiserver not ready in 60 s; see $dir/logs" >&2
        exit 1
    fi
    sleep 0.5
done
echo "== kube-apiserver ready in $(( $(date +%s) - started )) s" >&2

"$bin/kube-scheduler" --kubeconfig "$dir/admin.kubeconfig" --bind-address 127.0.0.1 --secure-port 0 \
    >"$dir/logs/kube-scheduler.log" 2>&1 &
echo $! >"$dir/kube-scheduler.pid"
"$bin/kube-controller-manager" --kubeconfig "$dir/admin.kubeconfig" --bind-address 127.0.0.1 --secure-port 0 \
    --controllers '*,-node-lifecycle-controller' \
    --service-account-private-key-file "$dir/pki/sa.key" --use-service-account-credentials \
    >"$dir/logs/kube-controller-manager.log" 2>&1 &
echo $! >"$dir/kube-controller-manager.pid"

echo "$dir/admin.kubeconfig"
