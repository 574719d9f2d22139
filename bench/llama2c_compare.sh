#!/usr/bin/env bash
# Single-stream CPU decode, side by side: kiln's decode_bench against llama2.c's
# run.c at the same dim, layers, heads, context, vocabulary and threads.
# llama2.c is taken from the user's checkout (LLAMA2C_DIR): run.c is built in a
# temporary folder with the compile line of llama2.c's own Makefile (target
# runomp) and is not modified; nothing of it enters this repository. See
# bench/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
source "$ROOT/bench/lib.sh"

# llama2.c's stories15M: dim 288, 6 layers, 6 heads, context 256, vocabulary 32000.
readonly DEFAULT_CONFIGS=("6,6,288,256,32000")
# llama2.c's train.py default; with it dim 288 gets stories15M's hidden_dim 768.
readonly MULTIPLE_OF=32

usage() {
  cat <<EOF
Usage: LLAMA2C_DIR=/path/to/llama2.c bench/llama2c_compare.sh [options] [CONFIG ...]

Times single-stream greedy decoding on the CPU: llama2.c's run.c (fp32, OpenMP)
on a random Llama checkpoint, and kiln's decode_bench on a random GPT of the same
dim, layers, heads, context and vocabulary. Both generate from a one-token prompt
until the context is full and report tokens/s of the decode phase: the forwards
at positions 1 .. CONTEXT-1, the prompt's forward at position 0 excluded. Prints a
table of the medians over --runs runs, then kiln's breakdown of a decode step.

CONFIG is L,H,C,T,V: layers, heads, dim, context, vocabulary. Default:
  ${DEFAULT_CONFIGS[*]} (llama2.c's stories15M). V must not exceed the entries of
  LLAMA2C_DIR/tokenizer.bin (32000), which run.c reads.

Environment:
  LLAMA2C_DIR       A llama2.c checkout (github.com/karpathy/llama2.c). Required.
  CC                The C compiler for run.c (default: the Makefile's, gcc).

Options:
  --runs N          Runs of each program per config; the table gives medians (default 3).
  --threads N       OMP_NUM_THREADS for both programs (default: nproc, $(nproc) here).
  --build-dir DIR   kiln's CMake build folder (default build/decode); configured
                    (RelWithDebInfo, KILN_CUDA=OFF) when it has no CMakeCache.txt,
                    and decode_bench is rebuilt when stale.
  --keep            Keep the temporary folder (run.c, checkpoints, logs).
  -h, --help        Show this help and exit.
EOF
}

runs=3
threads="$(nproc)"
build_dir="$ROOT/build/decode"
keep=0
configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?--runs needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --build-dir) build_dir="${2:?--build-dir needs a value}"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1'" "run bench/llama2c_compare.sh --help" ;;
    *) configs+=("$1"); shift ;;
  esac
done
[ ${#configs[@]} -gt 0 ] || configs=("${DEFAULT_CONFIGS[@]}")

[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive whole number, got '$runs'"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive whole number, got '$threads'"
for cfg in "${configs[@]}"; do
  [[ "$cfg" =~ ^[1-9][0-9]*(,[1-9][0-9]*){4}$ ]] ||
    die "config '$cfg' is not five positive whole numbers L,H,C,T,V" "e.g. 6,6,288,256,32000"
  IFS=, read -r _ h c t v <<<"$cfg"
  [ $((c % h)) -eq 0 ] || die "config '$cfg': dim $c is not a multiple of heads $h"
  [ $((c / h % 2)) -eq 0 ] || die "config '$cfg': run.c's RoPE needs an even head size, got $((c / h))"
  [ "$t" -ge 3 ] || die "config '$cfg': the context must be at least 3 to time a decode phase"
  [ "$v" -ge 2 ] || die "config '$cfg': the vocabulary must hold run.c's BOS token 1"
done

[ -n "${LLAMA2C_DIR:-}" ] || die "LLAMA2C_DIR is not set" \
  "git clone https://github.com/karpathy/llama2.c /some/where && LLAMA2C_DIR=/some/where $0"
for f in run.c Makefile tokenizer.bin; do
  [ -f "$LLAMA2C_DIR/$f" ] || die "LLAMA2C_DIR=$LLAMA2C_DIR has no $f; is it a llama2.c checkout?"
done
need make "install make (run.c's compile line is read from llama2.c's Makefile)"
need cmake "install CMake (see docs/development.md)"
# The checkpoint writer needs numpy; take the first Python 3 that has it.
python="$(kiln_numpy_python)"

work="$(mktemp -d "${TMPDIR:-/tmp}/llama2c-compare.XXXXXX")"
if [ "$keep" = 1 ]; then
  trap 'log "kept $work"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi

# --- kiln ------------------------------------------------------------------
kiln_bench_build "$build_dir" "$work" decode_bench
kiln_bench="$build_dir/bench/decode_bench"
# The optimisation flags of the files that do the arithmetic, from the build itself.
kiln_flags="$(kiln_compile_flags "$python" "$build_dir" \
  '(kernels/cpu/(?:ops|matmul_bf16)|worker/model/gpt|worker/serve/(?:decoder|sampler|kv_cache|engine))\.cc$')"

# --- llama2.c --------------------------------------------------------------
# run.c is compiled with the line llama2.c's Makefile runs for 'make runomp'
# (gcc: -Ofast -fopenmp -march=native), read with 'make -n' so that it is the
# checkout's own; only the run.c line of that target is run (it also builds runq.c).
mkdir -p "$work/llama2c"
cp "$LLAMA2C_DIR/run.c" "$LLAMA2C_DIR/Makefile" "$work/llama2c/"
make_args=(-n -C "$work/llama2c" runomp)
[ -z "${CC:-}" ] || make_args+=("CC=$CC")
llama2c_cmd="$(make --no-print-directory "${make_args[@]}" | grep -E '(^|[[:space:]])run\.c([[:space:]]|$)' || true)"
[ "$(printf '%s\n' "$llama2c_cmd" | grep -c .)" -eq 1 ] ||
  die "cannot find one compile line for run.c in 'make -n runomp' of $LLAMA2C_DIR/Makefile" \
    "use a llama2.c checkout whose Makefile has the runomp target"
log "building llama2.c's run.c: $llama2c_cmd"
(cd "$work/llama2c" && bash -c "$llama2c_cmd") >"$work/llama2c-build.log" 2>&1 ||
  { tail -30 "$work/llama2c-build.log" >&2; die "building run.c failed"; }
[ -x "$work/llama2c/run" ] || die "run.c's compile line did not produce $work/llama2c/run"
llama2c_commit="$(git -C "$LLAMA2C_DIR" rev-parse --short HEAD 2>/dev/null || echo "unknown commit")"

# write_checkpoint PATH TOKENIZER L H C T V HIDDEN: a random Llama in run.c's
# format (read_checkpoint and memory_map_weights): a header of 7 int32 (dim,
# hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; vocab_size
# positive for a classifier shared with the embedding), then fp32 tensors in
# run.c's order. Weights N(0, 0.02), wo and w3 N(0, 0.02/sqrt(2L)) as llama2.c's
# model.py initialises them, RMSNorm weights 1. The BOS token's embedding row is
# zero so that its logit is 0 and greedy decoding never picks it (run.c stops at
# BOS): generation always runs to the end of the context.
write_checkpoint() {
  "$python" - "$@" <<'PY'
import math, struct, sys
import numpy as np
path, tokenizer = sys.argv[1], sys.argv[2]
L, H, C, T, V, hidden = map(int, sys.argv[3:9])
with open(tokenizer, "rb") as f:
    data = f.read()
entries, at = 0, 4
while at < len(data):
    (n,) = struct.unpack_from("<i", data, at + 4)
    at += 8 + n
    entries += 1
if V > entries:
    sys.exit(f"vocabulary {V} exceeds the {entries} entries of {tokenizer}, which run.c reads")
rng = np.random.default_rng(1337)
def normal(shape, std=0.02):
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
resid = 0.02 / math.sqrt(2 * L)
wte = normal((V, C))
wte[1] = 0
tensors = [
    wte,                                    # token_embedding_table (V, C)
    np.ones((L, C), np.float32),            # rms_att_weight
    normal((L, C, C)),                      # wq
    normal((L, C, C)),                      # wk (n_kv_heads = n_heads)
    normal((L, C, C)),                      # wv
    normal((L, C, C), resid),               # wo
    np.ones((L, C), np.float32),            # rms_ffn_weight
    normal((L, hidden, C)),                 # w1
    normal((L, C, hidden)),                 # w2
    normal((L, hidden, C), resid),          # w3
    np.ones(C, np.float32),                 # rms_final_weight
    np.zeros(T * (C // H), np.float32),     # freq_cis_real and _imag, skipped by run.c
]
with open(path, "wb") as f:
    f.write(struct.pack("<7i", C, hidden, L, H, H, V, T))
    for t in tensors:
        f.write(t.astype("<f4").tobytes())
PY
}

# median X...: the middle value (the mean of the two middle ones for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- runs ------------------------------------------------------------------
rows=()
flops_lines=()
for cfg in "${configs[@]}"; do
  IFS=, read -r L H C T V <<<"$cfg"
  hidden=$((MULTIPLE_OF * ((8 * C / 3 + MULTIPLE_OF - 1) / MULTIPLE_OF)))
  ckpt="$work/llama_${L}_${H}_${C}_${T}_${V}.bin"
  log "config $cfg: writing a random llama2.c checkpoint (hidden_dim $hidden)"
  write_checkpoint "$ckpt" "$LLAMA2C_DIR/tokenizer.bin" "$L" "$H" "$C" "$T" "$V" "$hidden" \
    2>"$work/checkpoint.log" || { cat "$work/checkpoint.log" >&2; die "cannot write the checkpoint for $cfg"; }

  llama2c_tps=()
  kiln_dec_tps=()
  kiln_eng_tps=()
  kiln_b16_tps=()
  for run in $(seq 1 "$runs"); do
    log "config $cfg: run $run/$runs: llama2.c, $threads threads"
    llama2c_log="$work/llama2c_${cfg}_$run.log"
    # -t 0: greedy; -n T: T forwards, positions 0 .. T-1; -s 1: a fixed seed
    # (unused when greedy). The text goes to a file, the timing to stderr.
    (cd "$work/llama2c" && OMP_NUM_THREADS="$threads" ./run "$ckpt" -z "$LLAMA2C_DIR/tokenizer.bin" \
      -t 0 -n "$T" -s 1 >"$work/llama2c_${cfg}_$run.txt" 2>"$llama2c_log") ||
      { tail -20 "$llama2c_log" >&2; die "llama2.c's run failed on $cfg"; }
    tps="$(sed -nE 's/^achieved tok\/s: ([0-9.]+)$/\1/p' "$llama2c_log")"
    [ -n "$tps" ] || { cat "$llama2c_log" >&2; die "run.c printed no 'achieved tok/s' line on $cfg"; }
    llama2c_tps+=("$tps")

    log "config $cfg: run $run/$runs: kiln, $threads threads"
    kiln_log="$work/kiln_${cfg}_$run.log"
    OMP_NUM_THREADS="$threads" "$kiln_bench" "$L" "$H" "$C" "$T" "$V" 0 1 >"$kiln_log" 2>&1 ||
      { cat "$kiln_log" >&2; die "decode_bench failed on $cfg"; }
    # Rows: row prompt prefill_ms decoded positions ms/token tokens/s GFLOP/s threads.
    read -r dec_n dec_tps dec_threads < <(awk '$1 == "decoder" { print $4, $7, $9 }' "$kiln_log") || true
    eng_tps="$(awk '$1 == "engine" { print $7 }' "$kiln_log")"
    b16_tps="$(awk '$1 == "dec-bf16" { print $7 }' "$kiln_log")"
    [ -n "${dec_tps:-}" ] && [ -n "$eng_tps" ] && [ -n "$b16_tps" ] ||
      { cat "$kiln_log" >&2; die "cannot read decode_bench's output"; }
    [ "$dec_threads" -eq "$threads" ] || die "decode_bench ran $dec_threads threads, expected $threads"
    [ "$dec_n" -eq $((T - 1)) ] || die "decode_bench decoded $dec_n positions, expected $((T - 1))"
    kiln_dec_tps+=("$dec_tps")
    kiln_eng_tps+=("$eng_tps")
    kiln_b16_tps+=("$b16_tps")
  done
  l_med="$(median "${llama2c_tps[@]}")"
  d_med="$(median "${kiln_dec_tps[@]}")"
  e_med="$(median "${kiln_eng_tps[@]}")"
  b_med="$(median "${kiln_b16_tps[@]}")"
  rows+=("$(awk -v cfg="$cfg" -v l="$l_med" -v d="$d_med" -v e="$e_med" -v b="$b_med" -v t="$threads" 'BEGIN {
    printf "%-20s %14.1f %14.1f %14.1f %12.2f %14.1f %12.2f %8d", cfg, l, d, e, d / l, b, b / l, t }')")

  # FLOPs per decode token, from the shapes: 2 per matmul weight plus attention's
  # q.k and weights.v (4*C per attended position and layer) at the mean attended
  # length of positions 1 .. T-1, which is (T + 2) / 2.
  Vp=$(((V + 63) / 64 * 64))
  flops_lines+=("$(awk -v cfg="$cfg" -v L="$L" -v C="$C" -v T="$T" -v V="$V" -v Vp="$Vp" -v F="$hidden" 'BEGIN {
    att = 4 * L * C * (T + 2) / 2
    lw = L * (4 * C * C + 3 * C * F) + V * C
    kw = L * 12 * C * C + Vp * C
    printf "# FLOPs/token %s: llama2.c %.2fM = 2 x %.3fM matmul weights (L x (4C^2 + 3C x hidden %d) + V x C)", cfg, (2 * lw + att) / 1e6, lw / 1e6, F
    printf " + %.2fM attention; kiln %.2fM = 2 x %.3fM (L x 12C^2 + Vp x C, Vp %d) + %.2fM attention", att / 1e6, (2 * kw + att) / 1e6, kw / 1e6, Vp, att / 1e6
  }')")
done

# --- report ----------------------------------------------------------------
cpu="$(sed -nE 's/^model name\s*: (.*)/\1/p' /proc/cpuinfo | head -1)"
echo "# llama2.c run.c vs kiln decode_bench: single-stream CPU decode, greedy, fp32 (kiln bf16: bf16 weight matrices)"
echo "# machine: ${cpu:-unknown CPU}, $(nproc) cores; OMP_NUM_THREADS=$threads; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# tokens/s: median of $runs runs over the forwards at positions 1..T-1 (position 0, the"
echo "#   prompt, excluded), each including its greedy argmax; run.c's 'achieved tok/s' (ms clock)"
echo "#   also includes printing each token (to a file here)"
echo "# llama2.c $llama2c_commit (Llama: RMSNorm, RoPE, SwiGLU, no biases): $llama2c_cmd"
echo "# kiln $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "unknown") (GPT-2: LayerNorm, learned positions, GELU MLP 4C, biases): $kiln_flags"
echo "# command: LLAMA2C_DIR=$LLAMA2C_DIR bench/llama2c_compare.sh --runs $runs --threads $threads ${configs[*]}"
printf '%s\n' "${flops_lines[@]}"
printf '%-20s %14s %14s %14s %12s %14s %12s %8s\n' \
  "L,H,C,T,V" "llama2.c tok/s" "kiln dec tok/s" "kiln eng tok/s" "dec/llama2.c" "kiln bf16 tok/s" \
  "bf16/llama2.c" threads
printf '%s\n' "${rows[@]}"
echo
echo "# kiln's breakdown, from its last run of $cfg:"
sed -n '/^# where a decoder step/,$p' "$kiln_log"
