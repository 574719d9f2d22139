#!/usr/bin/env bash
# GPT-2 124M training steps on one GPU, side by side in one run: kiln's
# gpt_cuda_bench, llm.c's train_gpt2cu (built here from LLMC_DIR with this
# machine's nvcc; -e d12 initialises the model without a checkpoint, on
# random-token data files made here) and PyTorch (bench/torch_gpt2_train.py:
# torch.compile, SDPA, fused AdamW, bf16 autocast). All at T=1024, bf16 with
# fp32 master weights, no recompute, one GPU. Rounds alternate kiln and llm.c
# (A B A B) and, with --base, a second kiln build (to measure a change); the
# PyTorch anchor compiles once per batch size and runs once. Prints ms/step,
# tokens/s, MFU (kiln's FLOPs per token, of the dense bf16 peak) and memory
# as a markdown table, plus the GPU and driver.
#
# Usage: bench/gpu_train_compare.sh --build DIR [--base DIR] [--batches "16 64 8"]
#          [--steps N] [--rounds R] [--no-torch] [--work DIR]
#   LLMC_DIR: an llm.c checkout (skipped when unset); PYTHON: the python with torch.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
build="" base="" batches="16 64 8" steps=20 rounds=2 torch=1 work="${TMPDIR:-/tmp}/kiln-gpu-compare"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --batches) batches="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --no-torch) torch=0; shift ;;
    --work) work="$2"; shift 2 ;;
    *) echo "usage: $0 --build DIR [--base DIR] [--batches LIST] [--steps N] [--rounds R] [--no-torch] [--work DIR]" >&2; exit 2 ;;
  esac
done
[ -x "$build/bench/gpt_cuda_bench" ] || { echo "gpu_train_compare: no $build/bench/gpt_cuda_bench" >&2; exit 2; }
[ -z "$base" ] || [ -x "$base/bench/gpt_cuda_bench" ] || { echo "gpu_train_compare: no $base/bench/gpt_cuda_bench" >&2; exit 2; }
mkdir -p "$work"
python="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'

# llm.c: build, and token files in its format (256 int32 header: magic
# 20240520, version 1, count; then uint16 tokens).
llmc=""
if [ -n "${LLMC_DIR:-}" ]; then
  "$python" - "$work" <<'PY'
import random, struct, sys
rng = random.Random(1)
for name, n in (("train", 4_000_000), ("val", 300_000)):
    with open(f"{sys.argv[1]}/llmc_{name}.bin", "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
        f.write(struct.pack(f"<{n}H", *(rng.randrange(50257) for _ in range(n))))
PY
  if [ ! -x "$work/train_gpt2cu" ]; then
    echo "building llm.c's train_gpt2cu (nvcc $(nvcc --version | tail -1))"
    # CUDA 13 takes a cudaMemLocation where llm.c passes cudaCpuDeviceId (its
    # one incompatibility): build a copy with that argument spelled for 13.
    rm -rf "$work/llmc-src" && cp -r "$LLMC_DIR" "$work/llmc-src"
    if nvcc --version | grep -q 'release 1[3-9]'; then
      sed -i 's/cudaMemAdviseSetPreferredLocation, cudaCpuDeviceId)/cudaMemAdviseSetPreferredLocation, cudaMemLocation{cudaMemLocationTypeHost, 0})/' \
        "$work/llmc-src/llmc/cuda_utils.cuh"
    fi
    (cd "$work/llmc-src" && nvcc --threads=0 -t=0 --use_fast_math -std=c++17 -O3 \
      --generate-code 'arch=compute_90,code=[compute_90,sm_90]' train_gpt2.cu \
      -L"$(dirname "$(command -v nvcc)")/../lib64/stubs" -lcublas -lcublasLt -lnvidia-ml -o "$work/train_gpt2cu") >"$work/llmc-build.log" 2>&1 ||
      { tail -20 "$work/llmc-build.log" >&2; echo "gpu_train_compare: llm.c build failed" >&2; exit 1; }
  fi
  llmc="$work/train_gpt2cu"
fi

# One run of each program at batch $1; each appends "name B ms mem_gib" to $work/rows.
run_kiln() {  # NAME BUILD B
  local line
  line=$("$2/bench/gpt_cuda_bench" 12 12 768 1024 "$3" "$steps")
  echo "  $1: $line"
  local ms mem
  ms=$(sed -n 's/.*: \([0-9.]*\) ms\/step mean.*/\1/p' <<<"$line")
  mem=$(sed -n 's/.*, \([0-9.]*\) GiB in use.*/\1/p' <<<"$line")
  echo "$1 $3 $ms $mem" >>"$work/rows"
  # kiln's FLOPs per token (TrainingFlopsPerToken), for every program's MFU.
  sed -n 's/.* \([0-9.]*\) tokens\/s, \([0-9.]*\) TFLOP\/s.*/\2e12 \1/p' <<<"$line" |
    awk '{printf "%.6e\n", $1 / $2}' >"$work/flops_per_token"
}
run_llmc() {  # B
  local log="$work/llmc-b$1.log"
  (cd "$work" && "$llmc" -i llmc_train.bin -j llmc_val.bin -e d12 -b "$1" -t 1024 -r 0 -z 0 \
    -x $((steps + 3)) -v 100000 -m 1 -s 100000 -n 0 -h 0 >"$log" 2>&1) ||
    { tail -20 "$log" >&2; echo "gpu_train_compare: llm.c failed" >&2; return 1; }
  # Steps 1-3 warm up; the mean of the rest, from llm.c's "(xx.xx ms |" field.
  local ms mem
  ms=$(grep -E '^step +[0-9]+/' "$log" | tail -n "$steps" |
    sed -n 's/.*| *\([0-9.]*\) ms |.*/\1/p' | awk '{s += $1; n++} END {if (n) printf "%.2f", s / n}')
  mem=$(sed -n 's/^device memory usage: \([0-9]*\) MiB.*/\1/p' "$log" | awk '{printf "%.1f", $1 / 1024}')
  echo "  llm.c: B=$1 $ms ms/step (mean of $steps after 3), $mem GiB"
  echo "llm.c $1 $ms $mem" >>"$work/rows"
}
run_torch() {  # B
  local line
  line=$("$python" "$ROOT/bench/torch_gpt2_train.py" --batch "$1" --steps "$steps" --warmup 4 | tail -1)
  echo "  $line"
  local ms mem
  ms=$(sed -n 's/.* mean \([0-9.]*\) .*/\1/p' <<<"$line")
  mem=$(sed -n 's/.* peak_gib \([0-9.]*\) .*/\1/p' <<<"$line")
  [ -n "$ms" ] && echo "pytorch $1 $ms $mem" >>"$work/rows"
}

: >"$work/rows"
for B in $batches; do
  echo "batch $B"
  for ((r = 0; r < rounds; r++)); do
    run_kiln kiln "$build" "$B"
    [ -z "$base" ] || run_kiln kiln-base "$base" "$B"
    [ -z "$llmc" ] || run_llmc "$B" || true
  done
  [ "$torch" = 0 ] || run_torch "$B" || true
done

# The table: per program and batch, the range of ms/step over the rounds.
"$python" - "$work/rows" "$work/flops_per_token" <<'PY'
import collections, sys
PEAK = 989e12  # H100/H200 SXM dense bf16, as gpt_cuda_bench.
flops_per_token = float(open(sys.argv[2]).read())
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, b, ms, mem = line.split()
    rows[(name, int(b))].append((float(ms), mem))
names = [n for n in ("llm.c", "pytorch", "kiln-base", "kiln") if any(k[0] == n for k in rows)]
print("\n| B | " + " | ".join(names) + " |")
print("|---" * (len(names) + 1) + "|")
for b in sorted({k[1] for k in rows}):
    cells = []
    for n in names:
        r = rows.get((n, b))
        if not r:
            cells.append("-")
            continue
        lo, hi = min(x[0] for x in r), max(x[0] for x in r)
        mid = sorted(x[0] for x in r)[len(r) // 2]
        tok = b * 1024 / (mid / 1000)
        ms = f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}"
        cells.append(f"{ms} ms, {tok:,.0f} tok/s, MFU {100 * flops_per_token * tok / PEAK:.1f}%, {r[0][1]} GiB")
    print(f"| {b} | " + " | ".join(cells) + " |")
PY
