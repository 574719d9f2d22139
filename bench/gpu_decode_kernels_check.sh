#!/usr/bin/env bash
# The GPU check of the serving decoder's kernels (kernels/cuda/paged_attention,
# encoder's EmbedRows, gather, convert; issue 11 point 5): their Catch2 GPU
# tests against the CPU references, the training kernels' tests (same
# executable and harness; the encoder and the bf16 conversion are shared),
# the serving decoder's and the training model's GPU tests (both now run on
# these kernels), then decode_kernels_bench's rows, and, where
# compute-sanitizer is found, the new kernels' tests under its memcheck.
# Runs the executables directly (no ctest, whose files hold the build
# machine's paths), each under a timeout that also keeps the whole within
# 170 s (what no longer fits fails as "no time left").
# Prints one line per test (PASS/FAIL/SKIP, seconds; for the new kernels the
# compared tensors with their worst error), the benchmark table, and a
# summary; the log of a failed test is printed in full. Exit status 1 when a
# test or the benchmark failed.
#
# Usage (from the repository root, after building kiln_cuda_kernels_gpu_test
# kiln_cuda_decoder_gpu_test kiln_gpt_cuda_gpu_test decode_kernels_bench):
#   bench/gpu_decode_kernels_check.sh [BUILD_DIR]   (default build/ci)
set -uo pipefail
build="${1:-build/ci}"
work="$(mktemp -d "${TMPDIR:-/tmp}/kiln-decode-kernels.XXXXXX")"
passed=0 failed=0 skipped=0
deadline=$((SECONDS + 170))

command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'

# check NAME LIMIT_S SHOW_REGEX CMD...: runs CMD (a Catch2 GPU test); FAIL when
# it exits non-zero, SKIP when it passes but says "SKIPPED: no CUDA device"
# (tests/support/gpu.h), else PASS; prints output lines matching SHOW_REGEX.
check() {
  local name="$1" limit="$2" show="$3"
  shift 3
  local log="$work/${name//[^a-zA-Z0-9_.-]/_}.log" start rc verdict
  [ "$limit" -le $((deadline - SECONDS)) ] || limit=$((deadline - SECONDS))
  if [ "$limit" -le 0 ]; then
    echo "FAIL  $name: no time left"
    failed=$((failed + 1))
    return
  fi
  if [ ! -x "$1" ]; then
    echo "FAIL  $name: $1 is not built"
    failed=$((failed + 1))
    return
  fi
  start=$EPOCHREALTIME
  timeout "$limit" "$@" >"$log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" != 0 ]; then
    verdict=FAIL failed=$((failed + 1))
  elif grep -q 'SKIPPED: no CUDA device' "$log"; then
    verdict=SKIP skipped=$((skipped + 1))
  else
    verdict=PASS passed=$((passed + 1))
  fi
  printf '%-4s  %-40s %6s s%s\n' "$verdict" "$name" "$secs" "$([ "$rc" = 124 ] && echo " (timed out after ${limit} s)")"
  if [ "$verdict" = FAIL ]; then
    sed 's/^/      /' "$log"
  elif [ -n "$show" ]; then
    grep -E "$show" "$log" | sed 's/^ */      /'
  fi
}

tests="$build/tests"
new_kernels="paged_attention paged_attention_limits embed_rows gather_rows float_to_bf16"
echo "== the decoder's kernels against their CPU references (gpu.kernels.cuda.*)"
for t in $new_kernels; do
  check "$t" 60 '^ (C=|[^ ]+: (ok|FAILED))|^  [a-z]+: ' "$tests/kiln_cuda_kernels_gpu_test" "$t"
done
echo "== the serving decoder on them"
check serve.cuda_decoder 60 '' "$tests/kiln_cuda_decoder_gpu_test"
echo "== decode_kernels_bench (per call, one layer)"
bench_log="$work/decode_kernels_bench.log"
timeout $((deadline - SECONDS > 60 ? 60 : deadline - SECONDS)) "$build/bench/decode_kernels_bench" >"$bench_log" 2>&1
rc=$?
cat "$bench_log"
if [ "$rc" != 0 ]; then
  echo "FAIL  decode_kernels_bench (exit $rc)"
  failed=$((failed + 1))
fi
echo "== the training kernels (same harness) and the training model"
for t in encoder layernorm matmul attention gelu classifier adamw global_norm flash_attention; do
  check "$t" 30 '' "$tests/kiln_cuda_kernels_gpu_test" "$t"
done
check model.gpt_cuda 60 '' "$tests/kiln_gpt_cuda_gpu_test"
sanitizer="$(command -v compute-sanitizer || true)"
for d in "${CUDA_HOME:-/nonexistent}" /usr/local/cuda; do
  [ -n "$sanitizer" ] || [ ! -x "$d/bin/compute-sanitizer" ] || sanitizer="$d/bin/compute-sanitizer"
done
if [ -n "$sanitizer" ]; then
  echo "== compute-sanitizer memcheck of the decoder's kernels"
  check memcheck 60 'ERROR SUMMARY' "$sanitizer" --tool memcheck --error-exitcode 1 \
    "$tests/kiln_cuda_kernels_gpu_test" "${new_kernels// /,}"
else
  echo "== no compute-sanitizer (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin): memcheck not run"
fi
echo "== $passed passed, $failed failed, $skipped skipped (logs in $work)"
[ "$failed" = 0 ]
