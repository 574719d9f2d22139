#!/usr/bin/env bash
# The TrainingJob controller with many jobs on kwok nodes: JOBS one-worker
# jobs (1 fake GPU each) submitted one after the other → all Running, with
# the reconciles that took; then every running job queued at once (three
# rounds) → the controller's reconciles per second (2 workers). Brings up a
# local control plane of two clusters with NODES kwok nodes of 8 GPUs (the
# second cluster is hub and member, as in the integration test), runs the
# hidden [trainingjob-scale-bench] case of tests/integration/trainingjob_test.cc,
# and tears it down.
#   bench/trainingjob_scale_bench.sh [BUILD_DIR=build/ci]
#   KILN_BENCH_JOBS=1000 NODES=128
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
build="${1:-$ROOT/build/ci}"
bin="$build/tests/integration/kiln_trainingjob_integration_tests"
[ -x "$bin" ] || die "missing $bin" \
  "build first: cmake --build $build --target kiln_trainingjob_integration_tests"
nodes="${NODES:-128}"
dir="$(mktemp -d)/localcluster"
python3 "$ROOT/scripts/localcluster.py" up --dir "$dir" --clusters 2 --nodes "$nodes" \
  --gpus-per-node 8 --name-prefix tjscale- --owner-pid $$ >/dev/null
trap 'python3 "$ROOT/scripts/localcluster.py" down --dir "$dir" >/dev/null; rm -rf "$(dirname "$dir")"' EXIT
log "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $nodes kwok nodes x 8 GPUs"
KILN_LOCALCLUSTER_DIR="$dir" "$bin" '[trainingjob-scale-bench]' | grep '^trainingjob_scale_bench:'
