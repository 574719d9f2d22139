#!/usr/bin/env bash
# Fault → every rank resumed training, on real nodes (issue 14's figure): a
# 2-worker TrainingJob (2 CPU kiln-worker pods on two real nodes, 1 fake GPU
# each, checkpoint every 25 steps) loses a worker pod (force-deleted, rank 0
# and rank 1 in turn) KILN_BENCH_FAULTS times (default 20), each once the
# attempt has trained and checkpointed; backoff fixed at 1 s. Prints p50, p99
# and each sample of: fault → restart recorded, → gang Running again, →
# every rank of the new attempt trained its first step after resuming (the
# container runtime's log timestamps). Brings up a real-node cluster of its
# own (scripts/localcluster.py --real-nodes, as integration.realnodes), runs
# the hidden bench_resume_after_faults of
# tests/integration/trainingjob_realnodes_test.py, and tears it down.
#   bench/trainingjob_realnodes_bench.sh [BUILD_DIR=build/ci]
#   KILN_BENCH_FAULTS=20
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
build="${1:-$ROOT/build/ci}"
for bin in operator/kiln-operator worker/kiln-worker; do
  [ -x "$build/$bin" ] || die "missing $build/$bin" \
    "build first: cmake --build $build --target kiln-operator kiln-worker"
done
dir="$(mktemp -d)/localcluster"
python3 "$ROOT/scripts/localcluster.py" up --dir "$dir" --clusters 1 --nodes 1 --real-nodes 2 \
  --real-node-gpus 2 --name-prefix rnbench- --owner-pid $$ >/dev/null
trap 'python3 "$ROOT/scripts/localcluster.py" down --dir "$dir" >/dev/null; rm -rf "$(dirname "$dir")"' EXIT
log "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); 2 real nodes"
KILN_LOCALCLUSTER_DIR="$dir" KILN_OPERATOR_BIN="$build/operator/kiln-operator" \
  KILN_WORKER_BIN="$build/worker/kiln-worker" \
  python3 "$ROOT/tests/integration/trainingjob_realnodes_test.py" \
  TrainingJobOnRealNodesTest.bench_resume_after_faults 2>&1 |
  grep -E "^trainingjob_realnodes_bench:|Error|FAIL|Traceback|^  File|Exception"
