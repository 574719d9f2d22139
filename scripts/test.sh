#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/setup.sh), builds
# with the CI preset (warnings are errors, CUDA targets compiled), and runs every
# test: unit, GPU (skipped with a reason when no GPU is present), scripts, style
# and integration tests against the real local control plane.
# It also builds the CPU-only preset (no CUDA) and runs its unit tests, so the
# build without a CUDA toolkit keeps working.
# Environment: KILN_PRESET (default ci), KILN_TEST_CPU_BUILD=0 skips the
# CPU-only build; extra arguments go to the main ctest run.
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
status=0
if [ "${KILN_TEST_CPU_BUILD:-1}" = 1 ] && [ "$preset" != cpu ]; then
  log "building and unit-testing the CPU-only preset"
  cmake --preset cpu >/dev/null
  cmake --build --preset cpu
  ctest --preset cpu -L 'unit|process' || status=$?
fi
log "testing"
ctest --preset "$preset" "$@" || status=$?
log "finished in $(($(date +%s) - start))s (exit $status)"
exit "$status"
