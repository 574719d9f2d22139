#!/usr/bin/env bash
# kiln-router's configuration latency: the time from a ModelDeployment status
# write (weights 0/100, then 100/0, ...) to the first request after which
# every request goes to the new version, over 20 flips, with a client sending
# requests back to back on one kept-alive connection. Brings up a local
# control plane of one cluster, runs the hidden [router-bench] case of the
# router's integration test (tests/integration/router_api_test.cc: same
# setup, fake backends, kiln-router from the API), and tears it down.
#   bench/router_config_latency.sh [BUILD_DIR=build/ci]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
build="${1:-$ROOT/build/ci}"
bin="$build/tests/integration/kiln_router_integration_tests"
[ -x "$bin" ] || die "missing $bin" \
  "build first: cmake --build $build --target kiln_router_integration_tests"
dir="$(mktemp -d)/localcluster"
python3 "$ROOT/scripts/localcluster.py" up --dir "$dir" --clusters 1 --nodes 1 \
  --name-prefix routerbench- --owner-pid $$ >/dev/null
trap 'python3 "$ROOT/scripts/localcluster.py" down --dir "$dir" >/dev/null; rm -rf "$(dirname "$dir")"' EXIT
log "machine: $(nproc) cores, $(uname -r); kiln-router $("$build/router/kiln-router" --version)"
KILN_LOCALCLUSTER_DIR="$dir" "$bin" '[router-bench]' | grep '^router_api:'
