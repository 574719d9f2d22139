#!/usr/bin/env bash
# The TrainingJob controller's times on kwok nodes: submit → every worker
# Running for gangs of 8, 64 and 512 workers (1 fake GPU each), and fault →
# the whole gang Running again over 20 faults on an 8-worker gang (a deleted
# worker and a worker exiting 4, alternating; backoff fixed at 1 s), p50 and
# p99. Brings up a local control plane of two clusters with NODES kwok nodes
# of 8 GPUs (the second cluster is hub and member, as in the integration
# test), runs the hidden [trainingjob-bench] case of
# tests/integration/trainingjob_test.cc, and tears it down.
#   bench/trainingjob_bench.sh [BUILD_DIR=build/ci]
#   KILN_BENCH_GANGS="8 64 512" KILN_BENCH_FAULTS=20 NODES=64
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
build="${1:-$ROOT/build/ci}"
bin="$build/tests/integration/kiln_trainingjob_integration_tests"
[ -x "$bin" ] || die "missing $bin" \
  "build first: cmake --build $build --target kiln_trainingjob_integration_tests"
nodes="${NODES:-64}"
# Which hidden case runs (bench/trainingjob_scale_bench.sh picks the other).
case_tag="${KILN_BENCH_CASE:-trainingjob-bench}"
dir="$(mktemp -d)/localcluster"
python3 "$ROOT/scripts/localcluster.py" up --dir "$dir" --clusters 2 --nodes "$nodes" \
  --gpus-per-node 8 --name-prefix tjbench- --owner-pid $$ >/dev/null
trap 'python3 "$ROOT/scripts/localcluster.py" down --dir "$dir" >/dev/null; rm -rf "$(dirname "$dir")"' EXIT
log "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $nodes kwok nodes x 8 GPUs"
KILN_LOCALCLUSTER_DIR="$dir" "$bin" "[$case_tag]" | grep "^${case_tag//-/_}:"
