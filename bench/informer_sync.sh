#!/usr/bin/env bash
# List+watch benchmark: kiln's informer versus `kubectl get -w` on the same
# cluster and objects, then a no-op controller's reconcile rate.
# Usage: bench/informer_sync.sh [OBJECTS=10000] [WORKERS=2]   (after a build with the dev preset)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
objects=${1:-10000}
workers=${2:-2}
bin="${KILN_BENCH_BIN:-$ROOT/build/dev/bench/informer_sync_bench}"
[ -x "$bin" ] || die "benchmark binary $bin missing" "cmake --preset dev && cmake --build --preset dev"
dir="$(mktemp -d)/bench"
python3 "$ROOT/scripts/localcluster.py" up --dir "$dir" --clusters 1 --nodes 1 --owner-pid $$ >/dev/null
trap 'python3 "$ROOT/scripts/localcluster.py" down --dir "$dir" >/dev/null' EXIT
kc="$dir/kiln-1/kubeconfig"
kubectl="$(kiln_tools_bin)/kubectl --kubeconfig $kc"
$kubectl create namespace bench >/dev/null
log "creating $objects ConfigMaps"
python3 - "$objects" <<'PY' | $kubectl apply -n bench --server-side -f - >/dev/null
import json, sys
n = int(sys.argv[1])
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i:05d}",
     "labels": {"app": "bench", "shard": str(i % 16)}},
     "data": {"payload": "x" * 256}} for i in range(n)]}))
PY
log "kiln informer + no-op controller ($workers workers)"
# +1: every namespace also holds the kube-root-ca.crt ConfigMap.
"$bin" "$kc" bench $((objects + 1)) "$workers"

log "kubectl get -w (time until every object is printed, peak RSS)"
out="$(mktemp)"
start=$(date +%s%N)
$kubectl get configmaps -n bench -w -o name >"$out" 2>/dev/null &
pid=$!
# kubectl also lists kube-root-ca.crt.
while [ "$(wc -l <"$out")" -lt $((objects + 1)) ]; do sleep 0.01; done
end=$(date +%s%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
kill "$pid"
printf '{"tool": "kubectl get -w -o name", "objects": %d, "sync_ms": %.1f, "rss_kib": %d, "peak_rss_kib": %d}\n' \
  "$objects" "$(awk -v a="$start" -v b="$end" 'BEGIN {print (b - a) / 1e6}')" "$rss" "$hwm"
