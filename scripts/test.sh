#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/setup.sh), builds
# with the CI preset (warnings are errors, CUDA targets compiled), and runs every
# test: unit, GPU (skipped with a reason when no GPU is present), scripts, style
# and integration tests against the real local control plane.
# It also builds the CPU-only preset (no CUDA) and runs its unit tests, so the
# build without a CUDA toolkit keeps working. With KILN_TEST_SANITIZERS=1 it
# builds the unit tests under AddressSanitizer + UndefinedBehaviorSanitizer
# and under ThreadSanitizer and runs them; with KILN_TEST_FUZZ=1 it builds the
# libFuzzer harnesses (fuzz/) and runs each for a short bounded time
# (docs/reliability.md). Those two are off by default for now: the asan run
# still has two open findings, tsan has one open finding, and their
# cold-cache cost (an estimated 40-50 min on 2 cores) is not measured yet, so
# they would break CI's time budget and its result.
# Environment (main, CPU build: on unless set to 0; sanitizers, fuzz: off
# unless set to 1):
#   KILN_PRESET           the main preset (default ci)
#   KILN_TEST_MAIN=0      skips the main preset's build and tests
#   KILN_TEST_CPU_BUILD=0 skips the CPU-only build
#   KILN_TEST_SANITIZERS=1 adds the asan and tsan builds and their tests
#   KILN_TEST_FUZZ=1      adds the fuzz build and its runs
#   KILN_FUZZ_SECONDS     how long each harness runs (default 15)
# Extra arguments go to the main ctest run.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

preset="${KILN_PRESET:-ci}"
start=$(date +%s)
"$KILN_ROOT/scripts/setup.sh"
cd "$KILN_ROOT"
status=0

# part NAME COMMAND...: runs one step and says how long it took; its failure
# is remembered for the exit status and returned.
part() {
  local name="$1" t0 rc=0
  shift
  t0=$(date +%s)
  "$@" || rc=$?
  log "$name took $(($(date +%s) - t0))s (exit $rc)"
  [ "$rc" = 0 ] || status=$rc
  return "$rc"
}

if [ "${KILN_TEST_MAIN:-1}" = 1 ]; then
  log "configuring (preset $preset)"
  cmake --preset "$preset" >/dev/null
  log "building"
  cmake --build --preset "$preset"
fi
if [ "${KILN_TEST_CPU_BUILD:-1}" = 1 ] && [ "$preset" != cpu ]; then
  log "building and unit-testing the CPU-only preset"
  cmake --preset cpu >/dev/null
  cmake --build --preset cpu
  ctest --preset cpu -L 'unit|process' || status=$?
fi
# The images the demo's test (integration.demo) runs: packed from the two
# builds above, which scripts/images.sh finds up to date.
if [ "${KILN_TEST_MAIN:-1}" = 1 ] && [ "${KILN_TEST_CPU_BUILD:-1}" = 1 ] && [ "$preset" = ci ]; then
  log "packing the images (scripts/images.sh)"
  "$KILN_ROOT/scripts/images.sh" || status=$?
fi
if [ "${KILN_TEST_MAIN:-1}" = 1 ]; then
  log "testing"
  ctest --preset "$preset" "$@" || status=$?
fi
# The sanitizer builds make only what their tests need (the build presets
# name kiln_unit_tests); their objects share ccache with the other builds.
if [ "${KILN_TEST_SANITIZERS:-0}" = 1 ]; then
  for san in asan tsan; do
    log "building and unit-testing under $san"
    cmake --preset "$san" >/dev/null
    if part "$san build" cmake --build --preset "$san"; then
      part "$san tests" ctest --preset "$san" || true
    fi
  done
fi
if [ "${KILN_TEST_FUZZ:-0}" = 1 ]; then
  log "building the fuzz harnesses and running each for ${KILN_FUZZ_SECONDS:-15}s"
  cmake --preset fuzz -DKILN_FUZZ_SECONDS="${KILN_FUZZ_SECONDS:-15}" >/dev/null
  # One run at a time: each harness is one process on one core.
  if part "fuzz build" cmake --build --preset fuzz; then
    part "fuzz runs" ctest --preset fuzz -j1 || true
  fi
fi
log "finished in $(($(date +%s) - start))s (exit $status)"
exit "$status"
