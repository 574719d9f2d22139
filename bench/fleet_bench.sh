#!/usr/bin/env bash
# Fleet benchmark (issue 13): gang placement with the real API servers in the
# loop, kiln against kube-scheduler alone on the same clusters in the same run,
# and kiln-operator's memory while it watches the fleet. bench/README.md says
# what each step measures.
#
# Usage: bench/fleet_bench.sh [--build DIR] [--clusters N] [--nodes N] [--pods N]
#          [--gangs N] [--rounds N] [--seed N] [--kube-api-qps Q] [--timeout S] [--stall S] [--keep DIR]
#          [--memory-against BIN]   (the memory step for this build's kiln-operator and BIN, A B A B)
#          [--static-nodes]         (nodes with no kwok heartbeat: localcluster.py up --static-nodes)
set -euo pipefail
args="$*"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"

build="$ROOT/build/ci"
clusters=4        # the last one has H200s, the others H100s
nodes=2500        # per cluster
pods=20000        # filler pods, 1 GPU each, bound to random nodes
gangs=1000
rounds=2          # each round: kiln, then the anchor
seed=1
qps=50            # kiln-operator's default client rate limit (--kube-api-qps)
timeout=900       # seconds a run may take
stall=60          # seconds without progress that end a run
keep=""
memory_against=""
static_nodes=""
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
  --build) build="$2"; shift 2 ;;
  --clusters) clusters="$2"; shift 2 ;;
  --nodes) nodes="$2"; shift 2 ;;
  --pods) pods="$2"; shift 2 ;;
  --gangs) gangs="$2"; shift 2 ;;
  --rounds) rounds="$2"; shift 2 ;;
  --seed) seed="$2"; shift 2 ;;
  --kube-api-qps) qps="$2"; shift 2 ;;
  --timeout) timeout="$2"; shift 2 ;;
  --stall) stall="$2"; shift 2 ;;
  --keep) keep="$2"; shift 2 ;;
  --memory-against) memory_against="$2"; shift 2 ;;
  --static-nodes) static_nodes="--static-nodes"; shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "unknown argument $1" ;;
  esac
done
[ "$clusters" -ge 2 ] || die "--clusters must be at least 2 (one of them H200)"
driver="$build/bench/fleet_bench"
operator="$build/operator/kiln-operator"
for b in "$driver" "$operator"; do
  [ -x "$b" ] || die "$b missing" "cmake --build --preset ci --target fleet_bench kiln-operator"
done
kubectl="$(kiln_tools_bin)/kubectl"
lc="$ROOT/scripts/localcluster.py"

work="$(mktemp -d /tmp/fleet_bench.XXXXXX)"
results="$work/results.jsonl"
operator_pid=""
cleanup() {
  local rc=$?
  if [ -n "$operator_pid" ] && kill -0 "$operator_pid" 2>/dev/null; then
    kill "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  python3 "$lc" down --dir "$work/h200" >/dev/null 2>&1 || log "teardown of $work/h200 incomplete"
  python3 "$lc" down --dir "$work/h100" >/dev/null 2>&1 || log "teardown of $work/h100 incomplete"
  if [ -n "$keep" ]; then
    mkdir -p "$keep" && cp -r "$work"/*.log "$work"/*.json* "$keep"/ 2>/dev/null || true
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs," \
  "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "config: $clusters clusters x $nodes ${static_nodes:+static }kwok nodes (8 GPUs), $pods filler pods, $gangs gangs," \
  "$rounds rounds, seed $seed, kiln client qps $qps; commit $(git -C "$ROOT" rev-parse --short HEAD)"
echo "command: bench/fleet_bench.sh $args"

# The clusters: H100 ones, then one of H200s, labelled as layout.py does
# (racks of 16 nodes, NVLink domains of 4, 3 zones).
topology=(--nodes "$nodes" --nodes-per-nvlink-domain 4 --nodes-per-rack 16 --zones 3
  --owner-pid $$ --timeout 1200 $static_nodes)
t0=$(date +%s)
log "starting $((clusters - 1)) H100 cluster(s) and 1 H200 cluster of $nodes kwok nodes each"
python3 "$lc" up --dir "$work/h100" --clusters $((clusters - 1)) --name-prefix fb-h100- \
  "${topology[@]}" >"$work/up-h100.log"
python3 "$lc" up --dir "$work/h200" --clusters 1 --name-prefix fb-h200- \
  --gpu-product NVIDIA-H200 "${topology[@]}" >"$work/up-h200.log"
log "clusters up in $(($(date +%s) - t0)) s"
spec=""
for i in $(seq 1 $((clusters - 1))); do spec+="fb-h100-$i=$work/h100/fb-h100-$i/kubeconfig,"; done
spec+="fb-h200-1=$work/h200/fb-h200-1/kubeconfig"
hub=fb-h100-1
hub_kc="$work/h100/$hub/kubeconfig"
"$kubectl" --kubeconfig "$hub_kc" apply --server-side -f "$ROOT/crds/" >/dev/null
"$kubectl" --kubeconfig "$hub_kc" wait --for=condition=Established crd --all --timeout=120s >/dev/null

log "setup: MemberClusters, node conditions, $pods filler pods"
"$driver" setup --clusters "$spec" --hub "$hub" --pods "$pods" --seed "$seed" | tee -a "$results"

# kiln-operator's memory while it watches the fleet (every node and pod of
# every member): started afresh, measured once every member is Ready.
# $1: the binary; $2: its label in the results.
measure_memory() {
  local bin="$1" label="$2"
  log "kiln-operator ($label): memory while watching $((clusters * nodes)) nodes and the pods"
  # The last operator's status would pass the readiness check below at once.
  for mc in $("$kubectl" --kubeconfig "$hub_kc" get memberclusters -o name); do
    "$kubectl" --kubeconfig "$hub_kc" patch "$mc" --subresource=status --type=merge \
      -p '{"status":null}' >/dev/null
  done
  "$bin" --kubeconfig "$hub_kc" --member-secret-namespace fleetbench \
    --metrics-bind-address 0 --health-probe-bind-address 0 --log-level warn \
    --shared-volume-host-path /tmp --shared-volume-mount-path /kiln >"$work/operator-$label.log" 2>&1 &
  operator_pid=$!
  local start_ns ready_after="" max_rss=0 rss hwm threads watched_pods
  start_ns=$(date +%s%N)
  for _ in $(seq 1 600); do
    # Ready and counting every node: both caches of every member synced.
    if "$kubectl" --kubeconfig "$hub_kc" get memberclusters -o json 2>/dev/null | python3 -c '
import json, sys
want, n = int(sys.argv[1]), int(sys.argv[2])
items = json.load(sys.stdin)["items"]
ok = [m for m in items if m.get("status", {}).get("nodeCount") == n and any(
    c["type"] == "Ready" and c["status"] == "True" and c.get("reason") == "Connected"
    for c in m["status"].get("conditions", []))]
sys.exit(0 if len(ok) == want else 1)' "$clusters" "$nodes"; then
      ready_after=$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
      break
    fi
    kill -0 "$operator_pid" 2>/dev/null || die "kiln-operator exited; see $work/operator-$label.log"
    sleep 0.5
  done
  [ -n "$ready_after" ] || die "kiln-operator's members were not all Ready within 5 minutes"
  for _ in $(seq 1 20); do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$operator_pid/status")
    [ "$rss" -gt "$max_rss" ] && max_rss=$rss
    sleep 1
  done
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$operator_pid/status")
  threads=$(awk '/Threads/ {print $2}' "/proc/$operator_pid/status")
  watched_pods=$("$kubectl" --kubeconfig "$hub_kc" get pods -A --no-headers 2>/dev/null | wc -l)
  for i in $(seq 2 $((clusters - 1))); do
    watched_pods=$((watched_pods + $("$kubectl" --kubeconfig "$work/h100/fb-h100-$i/kubeconfig" get pods -A --no-headers 2>/dev/null | wc -l)))
  done
  watched_pods=$((watched_pods + $("$kubectl" --kubeconfig "$work/h200/fb-h200-1/kubeconfig" get pods -A --no-headers 2>/dev/null | wc -l)))
  kill "$operator_pid"
  wait "$operator_pid" 2>/dev/null || true
  operator_pid=""
  printf '{"step": "operator-memory", "operator": "%s", "nodes": %d, "pods": %d, "readySeconds": %s, "rssMaxMiB": %.1f, "vmHwmMiB": %.1f, "threads": %d}\n' \
    "$label" $((clusters * nodes)) "$watched_pods" "$ready_after" "$(awk -v k="$max_rss" 'BEGIN {print k / 1024}')" \
    "$(awk -v k="$hwm" 'BEGIN {print k / 1024}')" "$threads" | tee -a "$results"
}
if [ -n "$memory_against" ]; then
  # A B A B: this build's operator and the other binary, alternately.
  for _ in 1 2; do
    measure_memory "$operator" built
    measure_memory "$memory_against" against
  done
else
  measure_memory "$operator" built
fi

# Alternating rounds: kiln, then the anchor with the pods kiln placed.
run=0
for round in $(seq 1 "$rounds"); do
  run=$((run + 1))
  log "round $round: kiln ($gangs gangs as TrainingJobs)"
  "$driver" kiln --clusters "$spec" --hub "$hub" --run "$run" --gangs "$gangs" --seed "$seed" \
    --kube-api-qps "$qps" --plan "$work/plan-$round.json" --timeout "$timeout" --stall "$stall" \
    2>>"$work/driver.log" | tee -a "$results"
  run=$((run + 1))
  log "round $round: anchor (the same pods, kube-scheduler alone)"
  "$driver" anchor --clusters "$spec" --run "$run" --plan "$work/plan-$round.json" \
    --timeout "$timeout" --stall "$stall" 2>>"$work/driver.log" | tee -a "$results"
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def rng(mode, key, fmt="{:.1f}"):
    if mode == "anchor" and (key.startswith("decision") or key == "refused"):
        return "-"  # No decisions: kube-scheduler takes the pods as they come.
    v = [r[key] for r in rows if r.get("mode") == mode]
    return "-" if not v else fmt.format(min(v)) + (" - " + fmt.format(max(v)) if len(v) > 1 else "")
print(f"{'figure':<44} {'kiln':>22} {'anchor (kube-scheduler)':>24}")
for key, label, fmt in [
    ("placed", "gangs placed (of created)", "{:.0f}"),
    ("refused", "gangs refused", "{:.0f}"),
    ("decisionsPerSecond", "decisions/s (created -> decided)", "{:.1f}"),
    ("decisionP50Seconds", "decision p50 s", "{:.2f}"),
    ("decisionP99Seconds", "decision p99 s", "{:.2f}"),
    ("placedWorkers", "pods to bind", "{:.0f}"),
    ("boundPods", "pods bound", "{:.0f}"),
    ("podsNeverBound", "pods never bound", "{:.0f}"),
    ("gangsAllBound", "gangs with every pod bound", "{:.0f}"),
    ("allBoundSeconds", "first create -> last gang bound s", "{:.1f}"),
    ("gangsBoundPerSecond", "gangs bound/s", "{:.2f}"),
    ("podsBoundPerSecond", "pods bound/s", "{:.0f}"),
    ("gangBoundP50Seconds", "gang created -> all bound p50 s", "{:.1f}"),
    ("gangBoundP99Seconds", "gang created -> all bound p99 s", "{:.1f}"),
]:
    print(f"{label:<44} {rng('kiln', key, fmt):>22} {rng('anchor', key, fmt):>24}")
for r in rows:
    if r.get("step") == "operator-memory":
        print(f"kiln-operator ({r.get('operator', 'built')}): {r['nodes']} nodes, {r['pods']} pods watched: Ready after {r['readySeconds']} s, "
              f"RSS max {r['rssMaxMiB']:.0f} MiB, VmHWM {r['vmHwmMiB']:.0f} MiB, {r['threads']} threads")
PY
