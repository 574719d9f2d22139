#!/usr/bin/env bash
# Serving benchmark: starts `kiln-worker serve` on a model of the stories15M
# shape (dim 288, 6 layers, 6 heads, context 256; kiln's byte vocabulary) and
# runs bench/serve_load at 1, 8 and 32 concurrent streaming clients on
# loopback, printing one JSON line per level: aggregate tokens/s and p50/p99
# time to first token and latency.
#   bench/serve_bench.sh [BUILD_DIR=build/dev] [REQUESTS=64] [MAX_TOKENS=64]
# Environment: DEVICE=cpu|cuda (default cpu; cuda needs a CUDA build),
# SHAPE="LAYERS HEADS CHANNELS CONTEXT" (default "6 6 288 256"; "12 12 768
# 1024" is GPT-2 124M's), DATA=a manifest.json of prepare (default: the
# fortunes corpus, prepared here).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
build="${1:-$ROOT/build/dev}"
requests="${2:-64}"
max_tokens="${3:-64}"
worker="$build/worker/kiln-worker"
load="$build/bench/serve_load"
[ -x "$worker" ] && [ -x "$load" ] || die "missing $worker or $load" "build first: cmake --build $build --target kiln-worker serve_load"
tmp="$(mktemp -d)"
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
device="${DEVICE:-cpu}"
read -r layers heads channels context <<<"${SHAPE:-6 6 288 256}"
data="${DATA:-}"
if [ -z "$data" ]; then
  "$worker" prepare --input /usr/share/games/fortunes --output "$tmp/data" >/dev/null
  data="$tmp/data/manifest.json"
fi
# One training step writes a checkpoint of the shape (the weights barely matter
# for speed; a trained model would stop at end-of-text sooner).
"$worker" train --data "$data" --layers "$layers" --heads "$heads" --channels "$channels" \
  --seq "$context" --batch 1 --steps 1 --device "$device" --checkpoint-dir "$tmp/ckpt" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$worker" serve --checkpoint "$tmp/ckpt" --device "$device" --bind "127.0.0.1:$port" --max-running 32 \
  --max-batch-tokens 512 --max-queue 256 >"$tmp/serve.out" 2>&1 &
server_pid=$!
for _ in $(seq 600); do grep -q '"serving"' "$tmp/serve.out" && break; sleep 0.1; done
grep -q '"serving"' "$tmp/serve.out" || die "the server did not start: $(cat "$tmp/serve.out")" ""
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [ "$device" = cuda ]; then log "device: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"; fi
log "model: $layers layers, $heads heads, $channels channels, context $context, vocab 257, on $device; $requests requests of $max_tokens tokens per level"
for clients in 1 8 32; do
  "$load" "$port" "$clients" "$requests" "$max_tokens" 120
done
kill -TERM "$server_pid"
wait "$server_pid" || true
