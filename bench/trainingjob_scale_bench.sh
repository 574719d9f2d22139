#!/usr/bin/env bash
# The TrainingJob controller with many jobs on kwok nodes: JOBS one-worker
# jobs (1 fake GPU each) submitted one after the other → all Running, with
# the reconciles that took; then every running job queued at once (three
# rounds) → the controller's reconciles per second (2 workers). The hidden
# [trainingjob-scale-bench] case of tests/integration/trainingjob_test.cc,
# run by bench/trainingjob_bench.sh on 2 clusters of NODES kwok nodes.
#   bench/trainingjob_scale_bench.sh [BUILD_DIR=build/ci]
#   KILN_BENCH_JOBS=1000 NODES=128
set -euo pipefail
NODES="${NODES:-128}" KILN_BENCH_CASE=trainingjob-scale-bench \
  exec "$(cd "$(dirname "$0")" && pwd)/trainingjob_bench.sh" "$@"
