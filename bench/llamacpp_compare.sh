#!/usr/bin/env bash
# Serving, side by side: `kiln-worker serve` against llama.cpp's `llama-server`
# on the same GPT-2 shape, threads, slots and load, one server after the other
# (A B A B), with float and with bf16 weights. See docs/serving.md.
#
# llama.cpp comes from the llama-cpp-python source distribution on PyPI
# (pinned version and SHA-256), whose vendor/llama.cpp holds its sources; only
# the llama-server target is built, CPU only, into the cache. Nothing of it
# enters this repository.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
source "$ROOT/bench/lib.sh"

readonly LLAMACPP_PYPI_VERSION=0.3.36
readonly LLAMACPP_PYPI_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

usage() {
  cat <<EOF
Usage: bench/llamacpp_compare.sh [options]

Starts llama.cpp's llama-server and kiln-worker serve, one at a time, on a
model of the same shape (GPT-2: LAYERS layers, CHANNELS channels, HEADS heads,
context CONTEXT, kiln's 257-token byte vocabulary; random weights for
llama.cpp, a one-step checkpoint for kiln), each with THREADS threads and 32
slots, and runs bench/serve_load at each level of concurrent streaming
clients (completions of MAX_TOKENS tokens, temperature 0.8, ignore_eos).
Servers alternate within each round (llama.cpp, then kiln), for each weight
type. Each round also runs bench/decode_bench (kiln's decoder alone, one
stream, the same shape, prompt length and tokens) as the single-stream
reference. Prints one JSON line per measurement, then a table of ranges
(min-max over the rounds) and kiln / llama.cpp tokens/s, then kiln's one
client against decode_bench.

Options:
  --rounds N        Rounds (A B) per weight type (default 2).
  --levels "L ..."  Concurrent clients (default "1 8 32").
  --max-tokens N    Tokens per completion (default 128).
  --weights "W ..." f32 and/or bf16 (default "f32 bf16").
  --threads N       Threads of both servers (default: nproc, $(nproc) here).
  --shape "L H C T" Layers, heads, channels, context (default "6 6 288 256").
  --build-dir DIR   kiln's CMake build folder (default build/cpu); configured
                    (RelWithDebInfo, no CUDA) when it has no CMakeCache.txt.
  --also-kiln BIN   Another kiln-worker binary (e.g. a build of an earlier
                    commit), measured as "kiln-b" in the same rounds, after
                    kiln: for a change's before and after.
  --keep            Keep the temporary folder (models, server logs).
  -h, --help        Show this help and exit.

Requests per level: 16 at 1 client, else 8 per client (p99 over so few is
close to the maximum). llama.cpp is built once into
\$KILN_CACHE_DIR/llamacpp/$LLAMACPP_PYPI_VERSION (about 10 minutes on 2 cores).
EOF
}

rounds=2
levels="1 8 32"
max_tokens=128
weights="f32 bf16"
threads="$(nproc)"
shape="6 6 288 256"
build_dir="$ROOT/build/cpu"
also_kiln=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
    --levels) levels="${2:?--levels needs a value}"; shift 2 ;;
    --max-tokens) max_tokens="${2:?--max-tokens needs a value}"; shift 2 ;;
    --weights) weights="${2:?--weights needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --shape) shape="${2:?--shape needs a value}"; shift 2 ;;
    --build-dir) build_dir="${2:?--build-dir needs a value}"; shift 2 ;;
    --also-kiln) also_kiln="${2:?--also-kiln needs a value}"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1'" "run bench/llamacpp_compare.sh --help" ;;
  esac
done
for v in "$rounds" "$max_tokens" "$threads" $levels; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "'$v' is not a positive whole number" "run bench/llamacpp_compare.sh --help"
done
for w in $weights; do
  [[ "$w" == f32 || "$w" == bf16 ]] || die "--weights takes f32 and bf16, got '$w'"
done
read -r layers heads channels context <<<"$shape"
[ -n "${context:-}" ] || die "--shape needs four numbers: layers heads channels context"
[ $((channels % heads)) -eq 0 ] || die "--shape: channels $channels are not a multiple of heads $heads"
need cmake "install CMake (scripts/setup.sh)"
[ -z "$also_kiln" ] || [ -x "$also_kiln" ] || die "--also-kiln $also_kiln is not an executable"
servers=(llama.cpp kiln)
[ -z "$also_kiln" ] || servers+=(kiln-b)
python="$(kiln_numpy_python)"

work="$(mktemp -d "${TMPDIR:-/tmp}/llamacpp-compare.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- llama.cpp -------------------------------------------------------------
llamacpp_home="$KILN_CACHE_DIR/llamacpp/$LLAMACPP_PYPI_VERSION"
llama_server="$llamacpp_home/bin/llama-server"
if [ ! -x "$llama_server" ]; then
  log "building llama.cpp's llama-server from llama-cpp-python $LLAMACPP_PYPI_VERSION (PyPI sdist) into $llamacpp_home"
  src="$work/sdist"
  mkdir -p "$src"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMACPP_PYPI_VERSION" -d "$src" >"$work/pip.log" 2>&1 ||
    { tail -20 "$work/pip.log" >&2; die "pip could not download llama-cpp-python $LLAMACPP_PYPI_VERSION" "check that PyPI is reachable"; }
  tarball="$src/llama_cpp_python-$LLAMACPP_PYPI_VERSION.tar.gz"
  echo "$LLAMACPP_PYPI_SHA256  $tarball" | sha256sum --check --quiet ||
    die "llama_cpp_python-$LLAMACPP_PYPI_VERSION.tar.gz does not have the pinned SHA-256"
  tar -xzf "$tarball" -C "$src"
  llama_src="$src/llama_cpp_python-$LLAMACPP_PYPI_VERSION/vendor/llama.cpp"
  # CPU only, static, no network code; GGML_NATIVE (the default) compiles
  # for this CPU, as llama.cpp's own build does.
  cmake -S "$llama_src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >"$work/llamacpp-configure.log" 2>&1 ||
    { tail -20 "$work/llamacpp-configure.log" >&2; die "configuring llama.cpp failed"; }
  cmake --build "$src/build" --target llama-server -j"$(nproc)" >"$work/llamacpp-build.log" 2>&1 ||
    { tail -30 "$work/llamacpp-build.log" >&2; die "building llama-server failed"; }
  rm -rf "$llamacpp_home.partial"
  mkdir -p "$llamacpp_home.partial/bin"
  cp "$src/build/bin/llama-server" "$llamacpp_home.partial/bin/"
  cp -r "$llama_src/gguf-py" "$llamacpp_home.partial/"
  rm -rf "$llamacpp_home"
  mv "$llamacpp_home.partial" "$llamacpp_home"
  rm -rf "$src"
fi

# --- kiln ------------------------------------------------------------------
kiln_bench_build "$build_dir" "$work" kiln-worker serve_load decode_bench
worker="$build_dir/worker/kiln-worker"
load="$build_dir/bench/serve_load"
decode_bench="$build_dir/bench/decode_bench"
"$worker" prepare --input /usr/share/games/fortunes --output "$work/data" >/dev/null
"$worker" train --data "$work/data/manifest.json" --layers "$layers" --heads "$heads" \
  --channels "$channels" --seq "$context" --batch 1 --steps 1 --checkpoint-dir "$work/ckpt" >/dev/null
for w in $weights; do
  flag=()
  [ "$w" = bf16 ] && flag=(--bf16)
  PYTHONPATH="$llamacpp_home/gguf-py" "$python" "$ROOT/bench/llamacpp_gguf.py" "$work/model-$w.gguf" \
    --layers "$layers" --heads "$heads" --channels "$channels" --context "$context" "${flag[@]}"
done

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server NAME WEIGHTS PORT: starts one server in the background (its
# pid in server_pid) and waits until it answers READY_PATH with 200.
start_server() {
  local name="$1" w="$2" port="$3" ready
  if [ "$name" = llama.cpp ]; then
    # 32 slots of one context each (-c is shared by the slots); continuous
    # batching is llama-server's default.
    "$llama_server" -m "$work/model-$w.gguf" --host 127.0.0.1 --port "$port" -t "$threads" -tb "$threads" \
      -np 32 -c $((32 * context)) --metrics --no-webui >"$work/server-$name-$w.log" 2>&1 &
    ready=/health
  else
    local cpu_weights=float bin="$worker"
    [ "$w" = bf16 ] && cpu_weights=bf16
    [ "$name" = kiln-b ] && bin="$also_kiln"
    OMP_NUM_THREADS="$threads" "$bin" serve --checkpoint "$work/ckpt" --bind "127.0.0.1:$port" \
      --max-running 32 --max-batch-tokens 512 --max-queue 256 --cpu-weights "$cpu_weights" \
      >"$work/server-$name-$w.log" 2>&1 &
    ready=/readyz
  fi
  server_pid=$!
  for _ in $(seq 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port$ready" 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$work/server-$name-$w.log" >&2
  die "$name did not become ready on port $port"
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
log "model: $layers layers, $heads heads, $channels channels, context $context, vocab 257; $threads threads; 32 slots; $max_tokens tokens per completion"
results="$work/results.jsonl"
for w in $weights; do
  for round in $(seq "$rounds"); do
    # The decoder alone, one stream: the prompt's length in random tokens
    # ("Once upon a time, " is 18 bytes), then max_tokens tokens, greedy.
    row=decoder
    [ "$w" = bf16 ] && row=dec-bf16
    dec="$(OMP_NUM_THREADS="$threads" "$decode_bench" "$layers" "$heads" "$channels" "$context" 257 \
      "$max_tokens" 18 | awk -v row="$row" '$1 == row { print $7 }')"
    [ -n "$dec" ] || die "decode_bench printed no $row row"
    printf '{"server": "decode_bench", "weights": "%s", "round": %d, "clients": 1, "tokensPerSecond": %s}\n' \
      "$w" "$round" "$dec" | tee -a "$results"
    for name in "${servers[@]}"; do
      port="$(free_port)"
      start_server "$name" "$w" "$port"
      metric=()
      [ "$name" = llama.cpp ] && metric=(--tokens-metric llamacpp:tokens_predicted_total)
      # One request first, outside the figures (page faults, lazy set-up).
      "$load" "${metric[@]}" "$port" 1 1 "$max_tokens" 60 >/dev/null
      for clients in $levels; do
        requests=$((clients == 1 ? 16 : 8 * clients))
        line="$("$load" "${metric[@]}" "$port" "$clients" "$requests" "$max_tokens" 300)" ||
          die "serve_load against $name ($w) at $clients clients had failed requests: $line"
        printf '{"server": "%s", "weights": "%s", "round": %d, %s\n' "$name" "$w" "$round" "${line#\{}" | tee -a "$results"
      done
      stop_server
    done
  done
done

"$python" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def span(vals, fmt):
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else fmt.format(lo) + "-" + fmt.format(hi)
print()
print("| weights | clients | server | tokens/s | TTFT p50 ms | TTFT p99 ms | latency p99 ms | kiln / llama.cpp tokens/s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
keys = sorted({(r["weights"], r["clients"]) for r in rows}, key=lambda k: (k[0] != "f32", k[1]))
for w, c in keys:
    for server in ("llama.cpp", "kiln", "kiln-b"):
        rs = [r for r in rows if r["weights"] == w and r["clients"] == c and r["server"] == server]
        if not rs:
            continue
        ratio = ""
        if server != "llama.cpp":
            # Round by round: each kiln run over the llama.cpp run just before it.
            ratios = []
            for r in rs:
                base = [b for b in rows if b["weights"] == w and b["clients"] == c and b["server"] == "llama.cpp" and b["round"] == r["round"]]
                if base and base[0]["tokensPerSecond"] > 0:
                    ratios.append(r["tokensPerSecond"] / base[0]["tokensPerSecond"])
            ratio = span(ratios, "{:.2f}x") if ratios else ""
        print(f"| {w} | {c} | {server} | {span([r['tokensPerSecond'] for r in rs], '{:,.0f}')} | "
              f"{span([r['ttftP50Ms'] for r in rs], '{:.1f}')} | {span([r['ttftP99Ms'] for r in rs], '{:.1f}')} | "
              f"{span([r['latencyP99Ms'] for r in rs], '{:.0f}')} | {ratio} |")
# One client against the decoder alone, round by round. "streamed" is the
# client's token rate after its first token: (tokens - 1) / (latency - TTFT)
# at the medians; "all" also counts the prefill and the connection.
dec = [r for r in rows if r["server"] == "decode_bench"]
if dec:
    print()
    print("| weights | server | decode_bench tokens/s | 1 client, all tokens/s | 1 client, streamed tokens/s | all / decode_bench | streamed / decode_bench |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for w in sorted({r["weights"] for r in dec}, key=lambda w: w != "f32"):
        for server in ("kiln", "kiln-b"):
            pairs = []
            for d in [r for r in dec if r["weights"] == w]:
                one = [r for r in rows if r["server"] == server and r["weights"] == w and r["clients"] == 1 and r["round"] == d["round"]]
                if one:
                    o = one[0]
                    streamed = (o["maxTokens"] - 1) / ((o["latencyP50Ms"] - o["ttftP50Ms"]) / 1000)
                    pairs.append((d["tokensPerSecond"], o["tokensPerSecond"], streamed))
            if pairs:
                print(f"| {w} | {server} | {span([p[0] for p in pairs], '{:,.0f}')} | {span([p[1] for p in pairs], '{:,.0f}')} | "
                      f"{span([p[2] for p in pairs], '{:,.0f}')} | {span([p[1] / p[0] for p in pairs], '{:.2f}')} | "
                      f"{span([p[2] / p[0] for p in pairs], '{:.2f}')} |")
PY
