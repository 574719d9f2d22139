#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/setup.sh), builds
# with the CI preset (warnings are errors, CUDA targets compiled), and runs every
# test: unit, GPU (skipped with a reason when no GPU is present), scripts, style
# and integration tests against the real local control plane.
# Environment: KILN_PRESET (default ci), extra arguments go to ctest.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

preset="${KILN_PRESET:-ci}"
start=$(date +%s)
"$KILN_ROOT/scripts/setup.sh"
cd "$KILN_ROOT"
log "configuring (preset $preset)"
cmake --preset "$preset" >/dev/null
log "building"
cmake --build --preset "$preset"
log "testing"
status=0
ctest --preset "$preset" "$@" || status=$?
log "finished in $(($(date +%s) - start))s (exit $status)"
exit "$status"
