#!/usr/bin/env bash
# CPU training-step benchmark, side by side: kiln's gpt_cpu_bench against llm.c's
# train_gpt2.c at the same model size, batch, vocabulary, step count and threads.
# llm.c is taken from the user's checkout (LLMC_DIR) and patched in a temporary
# copy; nothing of it enters this repository. See bench/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
source "$ROOT/bench/lib.sh"

# gpt_cpu_bench times its steps after 2 untimed warm-up steps (bench/gpt_cpu_bench.cc);
# llm.c gets the same warm-up, which also covers its lazy allocation of
# activations, gradients and AdamW state on the first step.
readonly WARMUP=2
# The issue's two sizes (L,H,C,T,B,V), each at GPT-2's vocabulary and kiln's byte one.
readonly DEFAULT_CONFIGS=("4,4,128,64,4,50257" "6,6,384,256,8,50257" "4,4,128,64,4,257" "6,6,384,256,8,257")

usage() {
  cat <<EOF
Usage: LLMC_DIR=/path/to/llm.c bench/llmc_compare.sh [options] [CONFIG ...]

Times a CPU training step (forward, backward, AdamW) of llm.c's train_gpt2.c and
of kiln's gpt_cpu_bench at the same sizes and prints a table of mean ms/step and
tokens/s. Both run $WARMUP untimed warm-up steps, then the timed steps.

CONFIG is L,H,C,T,B,V: layers, heads, channels, sequence length, batch, vocabulary
(padded to a multiple of 64 for both, as kiln does). Default:
  ${DEFAULT_CONFIGS[*]}

Environment:
  LLMC_DIR          An llm.c checkout (github.com/karpathy/llm.c). Required.
  CC                The C compiler llm.c's Makefile uses (default: make's, cc).

Options:
  --steps N         Timed steps per run (default 20, gpt_cpu_bench's default).
  --threads N       OMP_NUM_THREADS for both programs (default: nproc, $(nproc) here).
  --build-dir DIR   kiln's CMake build folder (default build/llmc); configured
                    (RelWithDebInfo, KILN_CUDA=OFF) when it has no CMakeCache.txt,
                    and gpt_cpu_bench and kiln-worker are rebuilt when stale.
  --text PATH       Text tokenized by 'kiln-worker prepare' into the tokens llm.c
                    trains on (default /usr/share/games/fortunes).
  --keep            Keep the temporary folder (patched source, checkpoints, logs).
  -h, --help        Show this help and exit.
EOF
}

steps=20
threads="$(nproc)"
build_dir="$ROOT/build/llmc"
text=/usr/share/games/fortunes
keep=0
configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="${2:?--steps needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --build-dir) build_dir="${2:?--build-dir needs a value}"; shift 2 ;;
    --text) text="${2:?--text needs a value}"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1'" "run bench/llmc_compare.sh --help" ;;
    *) configs+=("$1"); shift ;;
  esac
done
[ ${#configs[@]} -gt 0 ] || configs=("${DEFAULT_CONFIGS[@]}")

[[ "$steps" =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive whole number, got '$steps'"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive whole number, got '$threads'"
for cfg in "${configs[@]}"; do
  [[ "$cfg" =~ ^[1-9][0-9]*(,[1-9][0-9]*){5}$ ]] ||
    die "config '$cfg' is not six positive whole numbers L,H,C,T,B,V" "e.g. 4,4,128,64,4,50257"
  IFS=, read -r _ h c _ _ v <<<"$cfg"
  [ $((c % h)) -eq 0 ] || die "config '$cfg': channels $c are not a multiple of heads $h"
  [ "$v" -le 65536 ] || die "config '$cfg': token files hold uint16 tokens, so V must be <= 65536"
done

[ -n "${LLMC_DIR:-}" ] || die "LLMC_DIR is not set" \
  "git clone https://github.com/karpathy/llm.c /some/where && LLMC_DIR=/some/where $0"
for f in train_gpt2.c Makefile llmc/dataloader.h; do
  [ -f "$LLMC_DIR/$f" ] || die "LLMC_DIR=$LLMC_DIR has no $f; is it an llm.c checkout?"
done
[ -e "$text" ] || die "no text at $text" "pass --text with a text file or a folder of them"
need python3 "install Python 3"
need make "install make (llm.c is built with its own Makefile)"
need cmake "install CMake (see docs/development.md)"

work="$(mktemp -d "${TMPDIR:-/tmp}/llmc-compare.XXXXXX")"
if [ "$keep" = 1 ]; then
  trap 'log "kept $work"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi

# --- kiln ------------------------------------------------------------------
kiln_bench_build "$build_dir" "$work" gpt_cpu_bench kiln-worker
kiln_bench="$build_dir/bench/gpt_cpu_bench"
kiln_worker="$build_dir/worker/kiln-worker"
# The optimisation flags of the files that do the arithmetic, from the build itself.
kiln_flags="$(kiln_compile_flags python3 "$build_dir" '(kernels/cpu/[^/]+|worker/model/[^/]+)\.cc$')"

# --- llm.c -----------------------------------------------------------------
# Only train_gpt2.c, its headers and the Makefile are copied; the Makefile is then
# run unchanged, so llm.c is built exactly as 'make train_gpt2' builds it.
mkdir -p "$work/llmc"
cp "$LLMC_DIR/train_gpt2.c" "$LLMC_DIR/Makefile" "$work/llmc/"
cp -r "$LLMC_DIR/llmc" "$work/llmc/"
python3 - "$work/llmc/train_gpt2.c" <<'PY' || die "cannot patch $LLMC_DIR/train_gpt2.c" \
  "use an llm.c checkout whose train_gpt2.c main() matches these patches (written against f1e2ace, May 2025)"
import sys
path = sys.argv[1]
src = open(path).read()
# Each patch replaces text that must occur exactly once in train_gpt2.c's main();
# a checkout whose main() has drifted fails here rather than timing something else.
patches = [
    # Take the checkpoint, token files, B, T and the step count from the command
    # line instead of the hard-coded GPT-2 124M files and B=4, T=64, 41 steps.
    ("int main() {",
     "int main(int argc, char **argv) {\n"
     "    if (argc != 7) { fprintf(stderr, \"usage: %s CHECKPOINT TRAIN VAL B T STEPS\\n\", argv[0]); return 2; }"),
    ('gpt2_build_from_checkpoint(&model, "gpt2_124M.bin");',
     "gpt2_build_from_checkpoint(&model, argv[1]);"),
    ("const char* train_tokens = access(tiny_shakespeare_train, F_OK) != -1 ? tiny_shakespeare_train : tiny_stories_train;",
     "const char* train_tokens = argv[2];"),
    ("const char* val_tokens = access(tiny_shakespeare_val, F_OK) != -1 ? tiny_shakespeare_val : tiny_stories_val;",
     "const char* val_tokens = argv[3];"),
    ("int B = 4;", "int B = atoi(argv[4]);"),
    ("int T = 64;", "int T = atoi(argv[5]);"),
    ("for (int step = 0; step <= 40; step++) {",
     "for (int step = 0; step < atoi(argv[6]); step++) {"),
    # No validation loss and no sampling: neither is part of a training step, and
    # both run forward passes between the timed steps.
    ("if (step % 10 == 0) {", "if (0) {"),
    ("if (step > 0 && step % 20 == 0) {", "if (0) {"),
    # Start the clock after the batch is read, so that llm.c's step times the same
    # work as gpt_cpu_bench's: forward, zero-grad, backward and update.
    ("clock_gettime(CLOCK_MONOTONIC, &start);\n        dataloader_next_batch(&train_loader);",
     "dataloader_next_batch(&train_loader);\n        clock_gettime(CLOCK_MONOTONIC, &start);"),
]
for old, new in patches:
    n = src.count(old)
    if n != 1:
        sys.exit(f"train_gpt2.c: expected one '{old.splitlines()[0]}', found {n}; "
                 "this llm.c version's main() differs from the one the patches were written for")
    src = src.replace(old, new)
open(path, "w").write(src)
PY
log "building llm.c's train_gpt2 with its Makefile"
make -C "$work/llmc" train_gpt2 >"$work/llmc-build.log" 2>&1 ||
  { tail -30 "$work/llmc-build.log" >&2; die "building llm.c's train_gpt2 failed"; }
llmc_cmd="$(grep -E -- '-o train_gpt2$' "$work/llmc-build.log" || true)"
llmc_commit="$(git -C "$LLMC_DIR" rev-parse --short HEAD 2>/dev/null || echo "unknown commit")"

# --- data ------------------------------------------------------------------
# Byte tokens from kiln's own prepare, in llm.c's token-file format. The cost of a
# step does not depend on token values, so the same file serves every vocabulary.
# Validation is patched out above, but llm.c still opens a val file: it gets the
# train file again.
log "tokenizing $text"
"$kiln_worker" prepare --input "$text" --output "$work/data" --val-fraction 0 >"$work/prepare.log" ||
  { cat "$work/prepare.log" >&2; die "kiln-worker prepare failed"; }
tokens_file="$work/data/train_000000.bin"
ntok="$(od -An -t d4 -j 8 -N 4 "$tokens_file" | tr -d ' ')"

# write_checkpoint PATH L H C maxT V Vp: a randomly initialised model in llm.c's
# fp32 checkpoint layout (the header and tensor order gpt2_build_from_checkpoint
# and fill_in_parameter_sizes read). GPT-2 init: weights N(0, 0.02), residual
# projections N(0, 0.02/sqrt(2L)), biases 0, layer-norm scales 1, padded
# vocabulary rows 0.
write_checkpoint() {
  python3 - "$@" <<'PY'
import array, math, random, sys
path, (L, H, C, maxT, V, Vp) = sys.argv[1], map(int, sys.argv[2:8])
rng = random.Random(1337)
header = array.array("i", [0] * 256)
header[0:8] = array.array("i", [20240326, 3, maxT, V, L, H, C, Vp])  # magic, version 3 = fp32
def normal(n, std):
    return array.array("f", (rng.gauss(0.0, std) for _ in range(n)))
def fill(n, value):
    return array.array("f", [value]) * n
proj_std = 0.02 / math.sqrt(2 * L)
tensors = [
    lambda: normal(V * C, 0.02) + fill((Vp - V) * C, 0.0),  # wte (Vp, C)
    lambda: normal(maxT * C, 0.02),                          # wpe
    lambda: fill(L * C, 1.0), lambda: fill(L * C, 0.0),      # ln1 w, b
    lambda: normal(L * 3 * C * C, 0.02),                     # qkvw
    lambda: fill(L * 3 * C, 0.0),                            # qkvb
    lambda: normal(L * C * C, proj_std),                     # attprojw
    lambda: fill(L * C, 0.0),                                # attprojb
    lambda: fill(L * C, 1.0), lambda: fill(L * C, 0.0),      # ln2 w, b
    lambda: normal(L * 4 * C * C, 0.02),                     # fcw
    lambda: fill(L * 4 * C, 0.0),                            # fcb
    lambda: normal(L * C * 4 * C, proj_std),                 # fcprojw
    lambda: fill(L * C, 0.0),                                # fcprojb
    lambda: fill(C, 1.0), lambda: fill(C, 0.0),              # lnf w, b
]
with open(path, "wb") as f:
    for a in [header] + [make() for make in tensors]:
        if sys.byteorder != "little":
            a.byteswap()
        a.tofile(f)
PY
}

# --- runs ------------------------------------------------------------------
rows=()
for cfg in "${configs[@]}"; do
  IFS=, read -r L H C T B V <<<"$cfg"
  Vp=$(((V + 63) / 64 * 64))
  [ "$ntok" -gt $((B * T)) ] ||
    die "$text gives $ntok tokens; config $cfg needs more than $((B * T))" "pass a larger --text"
  ckpt="$work/model_${L}_${H}_${C}_${T}_${V}.bin"
  log "config $cfg: writing a random checkpoint (V=$V padded to $Vp, maxT=$T)"
  write_checkpoint "$ckpt" "$L" "$H" "$C" "$T" "$V" "$Vp"

  log "config $cfg: llm.c, $WARMUP + $steps steps, $threads threads"
  llmc_log="$work/llmc_$cfg.log"
  (cd "$work/llmc" && OMP_NUM_THREADS="$threads" ./train_gpt2 "$ckpt" "$tokens_file" "$tokens_file" \
    "$B" "$T" $((WARMUP + steps))) >"$llmc_log" 2>&1 ||
    { tail -20 "$llmc_log" >&2; die "llm.c's train_gpt2 failed on $cfg"; }
  # llm.c prints "step N: train loss X (took Y ms)" per step, N from 0.
  read -r llmc_n llmc_ms < <(awk -v warmup="$WARMUP" '
    /^step [0-9]+: train loss .* \(took [0-9.]+ ms\)$/ {
      if ($2 + 0 >= warmup) { sum += $(NF - 1); n++ }
    }
    END { printf "%d %.4f\n", n, n ? sum / n : 0 }' "$llmc_log")
  [ "$llmc_n" -eq "$steps" ] || die "llm.c printed $llmc_n timed steps, expected $steps (see $llmc_log with --keep)"
  llmc_params="$(sed -nE 's/^num_parameters: ([0-9]+)$/\1/p' "$llmc_log")"

  log "config $cfg: kiln, $WARMUP + $steps steps, $threads threads"
  kiln_log="$work/kiln_$cfg.log"
  OMP_NUM_THREADS="$threads" "$kiln_bench" "$L" "$H" "$C" "$T" "$B" "$steps" "$V" >"$kiln_log" 2>&1 ||
    { cat "$kiln_log" >&2; die "gpt_cpu_bench failed on $cfg"; }
  read -r kiln_params kiln_threads kiln_tps < <(sed -nE \
    's/.* params=([0-9.]+)M threads=([0-9]+): .* ms\/step mean, .* best, ([0-9]+) tokens\/s.*/\1 \2 \3/p' "$kiln_log") || true
  [ -n "${kiln_tps:-}" ] || { cat "$kiln_log" >&2; die "cannot read gpt_cpu_bench's output"; }
  [ "$kiln_threads" -eq "$threads" ] || die "gpt_cpu_bench ran $kiln_threads threads, expected $threads"
  # Both must have built the same model: compare parameter counts at the 0.01M
  # gpt_cpu_bench prints.
  llmc_params_m="$(awk -v p="$llmc_params" 'BEGIN { printf "%.2f", p / 1e6 }')"
  [ "$llmc_params_m" = "$kiln_params" ] ||
    die "config $cfg: llm.c has ${llmc_params_m}M parameters, kiln ${kiln_params}M; the models differ"

  # gpt_cpu_bench prints ms/step to 0.1 ms; its tokens/s carries more digits, so
  # kiln's ms/step is taken from that.
  rows+=("$(awk -v cfg="$cfg" -v p="$kiln_params" -v bt=$((B * T)) -v lms="$llmc_ms" -v kt="$kiln_tps" 'BEGIN {
    kms = bt * 1000 / kt
    printf "%-22s %8sM %12.2f %12.2f %12.0f %12.0f %10.2f", cfg, p, lms, kms, bt * 1000 / lms, kt, kms / lms
  }')")
done

# --- report ----------------------------------------------------------------
cpu="$(sed -nE 's/^model name\s*: (.*)/\1/p' /proc/cpuinfo | head -1)"
echo "# llm.c train_gpt2.c vs kiln gpt_cpu_bench: CPU training step (forward, backward, AdamW)"
echo "# machine: ${cpu:-unknown CPU}, $(nproc) cores; OMP_NUM_THREADS=$threads; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# steps: $steps timed (mean) after $WARMUP warm-up; tokens from 'kiln-worker prepare' of $text"
echo "# llm.c $llmc_commit: $llmc_cmd"
echo "# kiln $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "unknown"): $kiln_flags"
echo "# command: LLMC_DIR=$LLMC_DIR bench/llmc_compare.sh --steps $steps --threads $threads ${configs[*]}"
printf '%-22s %9s %12s %12s %12s %12s %10s\n' \
  "L,H,C,T,B,V" params "llm.c ms" "kiln ms" "llm.c tok/s" "kiln tok/s" kiln/llm.c
printf '%s\n' "${rows[@]}"
