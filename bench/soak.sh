#!/usr/bin/env bash
# Soak (issue 19, point 5): kiln-router in front of two `kiln-worker serve`
# versions of one model under a steady, bounded load for --duration seconds,
# the routes file's weights flipped every --interval, memory and errors
# sampled every --interval. Prints requests, errors by kind, each process's
# RSS at the start (after --warmup), at the end, its maximum and its slope;
# exits 1 if any request failed or the router missed a flip. See
# bench/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"

usage() {
  cat <<EOF
Usage: bench/soak.sh [options]

Trains a tiny model (2 steps, 1 layer, 32 channels), serves it twice with
kiln-worker serve (versions v1 and v2 of the model "chat"), and puts
kiln-router in front with a routes file (v1 90, v2 10); all on 127.0.0.1.
bench/http_load then keeps --clients connections busy through the router
(half of them streaming; 16 tokens a request, each client sending its next
request when the last is answered) for --duration seconds. Every --interval
it samples VmRSS of the three processes and the router's /metrics into a CSV,
and, half an interval later, rewrites the routes file (a temporary file moved
in): 10/90, 90/10, 10/90, then 100/0, and again; it waits for /debug/routes
to show the new generation. Nothing is built: the binaries must exist.
Everything it starts is stopped on exit.

Options:
  --build DIR       kiln's build folder (default build/cpu).
  --duration S      Seconds of load, warm-up included (default 900).
  --warmup S        Seconds before the "start" memory sample (default 60).
  --interval S      Seconds between samples, and between flips (default 30).
  --clients N       Concurrent clients (default 4; half stream).
  --csv FILE        Also copy the samples' CSV here.
  --keep            Keep the temporary folder (logs, CSV, load results).
  -h, --help        Show this help and exit.
EOF
}

command_line="bench/soak.sh${*:+ $(printf '%q ' "$@")}"
build="$ROOT/build/cpu"
duration=900
warmup=60
interval=30
clients=4
csv_copy=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="${2:?--build needs a value}"; shift 2 ;;
    --duration) duration="${2:?--duration needs a value}"; shift 2 ;;
    --warmup) warmup="${2:?--warmup needs a value}"; shift 2 ;;
    --interval) interval="${2:?--interval needs a value}"; shift 2 ;;
    --clients) clients="${2:?--clients needs a value}"; shift 2 ;;
    --csv) csv_copy="${2:?--csv needs a value}"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1'" "run bench/soak.sh --help" ;;
  esac
done
for n in "$duration" "$interval" "$clients"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive whole number" "run bench/soak.sh --help"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup must be a whole number, got '$warmup'"
[ "$warmup" -lt "$duration" ] || die "--warmup ($warmup) must be shorter than --duration ($duration)"
[ "$interval" -ge 2 ] || die "--interval must be at least 2 seconds"

worker="$build/worker/kiln-worker"
router="$build/router/kiln-router"
load="$build/bench/http_load"
for bin in "$worker" "$router" "$load"; do
  [ -x "$bin" ] || die "missing $bin (this script builds nothing)" \
    "cmake --build $build --target kiln-worker kiln-router http_load"
done
corpus=/usr/share/games/fortunes
[ -d "$corpus" ] || die "no $corpus to train the served model on" "run scripts/setup.sh (it installs Debian's fortunes)"
need curl "apt-get install -y curl"
need python3 "scripts/setup.sh"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 70); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$keep" = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binaries are copied first: a build running beside the soak may replace them.
mkdir -p "$tmp/bin"
cp "$worker" "$router" "$load" "$tmp/bin/"
worker="$tmp/bin/kiln-worker" router="$tmp/bin/kiln-router" load="$tmp/bin/http_load"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# wait_ok NAME URL [POST_BODY]: until URL answers 200 (10 s at most).
wait_ok() {
  local name="$1" url="$2" body="${3:-}" code
  for _ in $(seq 100); do
    if [ -n "$body" ]; then
      code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$url" || true)
    else
      code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
    fi
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  die "$name did not answer 200 at $url within 10 s (last: $code); logs in $tmp (run with --keep)"
}
now() { date +%s.%N; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

log "training the served model (2 steps of a 1-layer, 32-channel model)"
"$worker" prepare --input "$corpus" --output "$tmp/data" >"$tmp/prepare.log" 2>&1 ||
  die "kiln-worker prepare failed" "see $tmp/prepare.log (run with --keep)"
# --seq 64: the load's prompt (24 bytes) and 16 tokens must fit the context.
"$worker" train --data "$tmp/data/manifest.json" --steps 2 --layers 1 --heads 2 --channels 32 \
  --batch 2 --seq 64 --checkpoint-dir "$tmp/ckpt" --checkpoint-every 2 >"$tmp/train.log" 2>&1 ||
  die "kiln-worker train failed" "see $tmp/train.log (run with --keep)"

port_v1=$(free_port) port_v2=$(free_port) port_router=$(free_port)
declare -A pid_of
for v in v1 v2; do
  port_var="port_$v"
  OMP_NUM_THREADS=1 "$worker" serve --checkpoint "$tmp/ckpt" --bind "127.0.0.1:${!port_var}" \
    --model-name chat --model-version "$v" >"$tmp/worker-$v.log" 2>&1 &
  pids+=($!)
  pid_of[$v]=$!
done
wait_ok "kiln-worker serve v1" "http://127.0.0.1:$port_v1/readyz"
wait_ok "kiln-worker serve v2" "http://127.0.0.1:$port_v2/readyz"

routes="$tmp/routes.json"
generation=0
# write_routes W1 W2: the next generation with those weights, moved in whole.
write_routes() {
  generation=$((generation + 1))
  cat >"$routes.tmp" <<EOF
{"generation": $generation, "routes": [{"name": "default/chat", "models": ["chat"],
  "versions": [
    {"name": "v1", "role": "stable", "weight": $1, "endpoints": ["127.0.0.1:$port_v1"]},
    {"name": "v2", "role": "canary", "weight": $2, "endpoints": ["127.0.0.1:$port_v2"]}]}]}
EOF
  mv "$routes.tmp" "$routes"
}
write_routes 90 10
weights="90 10"
"$router" --listen="127.0.0.1:$port_router" --routes="$routes" --drain-timeout=5s \
  >"$tmp/router.log" 2>&1 &
pids+=($!)
pid_of[router]=$!
wait_ok kiln-router "http://127.0.0.1:$port_router/readyz"
wait_ok "kiln-router's proxy" "http://127.0.0.1:$port_router/v1/completions" \
  '{"model": "chat", "prompt": "ready?", "max_tokens": 1}'

# routed_generation: the generation of the table the router uses.
routed_generation() {
  curl -sf "http://127.0.0.1:$port_router/debug/routes" |
    sed -n 's/^  "generation": \([0-9]*\),$/\1/p' || echo -1
}
# router_counts: "requests non200 errors v1_requests v2_requests" from /metrics
# (non200: answers with another status; errors: kiln_router_errors_total, all kinds).
router_counts() {
  curl -sf "http://127.0.0.1:$port_router/metrics" | awk '
    /^kiln_router_requests_total[{ ]/ {
      r += $NF
      if ($0 !~ /code="200"/) bad += $NF
      if ($0 ~ /version="v1"/) v1 += $NF
      if ($0 ~ /version="v2"/) v2 += $NF
    }
    /^kiln_router_errors_total[{ ]/ { e += $NF }
    END { printf "%.0f %.0f %.0f %.0f %.0f\n", r, bad, e, v1, v2 }' || echo "-1 -1 -1 -1 -1"
}

csv="$tmp/soak.csv"
echo "seconds,rss_router_kb,rss_v1_kb,rss_v2_kb,requests,errors,router_errors_total,requests_v1,requests_v2,weight_v1,weight_v2,generation" >"$csv"
sample() {
  local t="$1" counts
  counts=$(router_counts)
  echo "$t,$(rss_kib "${pid_of[router]}"),$(rss_kib "${pid_of[v1]}"),$(rss_kib "${pid_of[v2]}"),${counts// /,},${weights// /,},$generation" >>"$csv"
}

log "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
versions="$("$router" --version); $("$worker" --version)"
log "$versions; copied from $build"
stream_clients=$((clients / 2))
plain_clients=$((clients - stream_clients))
log "load: $plain_clients plain + $stream_clients streaming clients through the router for $duration s; flips every $interval s"
# A hard limit on each load generator: its duration, a minute for requests in
# flight (--timeout 10s each), then KILL.
hard_limit=$((duration + 60))
timeout -k 10 "$hard_limit" "$load" --port "$port_router" --connections "$plain_clients" \
  --duration "${duration}s" --timeout 10s --requests 1000000000000 >"$tmp/load-plain.json" 2>"$tmp/load-plain.err" &
load_plain_pid=$!
pids+=("$load_plain_pid")
if [ "$stream_clients" -gt 0 ]; then
  timeout -k 10 "$hard_limit" "$load" --port "$port_router" --connections "$stream_clients" --stream \
    --duration "${duration}s" --timeout 10s --requests 1000000000000 >"$tmp/load-stream.json" 2>"$tmp/load-stream.err" &
  load_stream_pid=$!
  pids+=("$load_stream_pid")
fi

# Ticks every half interval: samples on even ticks, flips on odd ones.
start=$(now)
flips=0 missed_flips=0 follow_max=0 loads=()
tick=0
while :; do
  due=$(awk -v s="$start" -v k="$tick" -v i="$interval" 'BEGIN {printf "%.3f", s + k * i / 2}')
  wait_s=$(awk -v d="$due" -v n="$(now)" 'BEGIN {w = d - n; printf "%.3f", (w > 0 ? w : 0)}')
  sleep "$wait_s"
  elapsed=$(awk -v s="$start" -v k="$tick" -v i="$interval" 'BEGIN {printf "%g", k * i / 2}')
  if awk -v e="$elapsed" -v d="$duration" 'BEGIN {exit !(e > d)}'; then break; fi
  if [ $((tick % 2)) = 0 ]; then
    sample "$elapsed"
    loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  elif awk -v e="$elapsed" -v d="$duration" 'BEGIN {exit !(e + 2 < d)}'; then
    flips=$((flips + 1))
    if [ $((flips % 4)) = 0 ]; then weights="100 0"; elif [ $((flips % 2)) = 1 ]; then weights="10 90"; else weights="90 10"; fi
    flip_start=$(now)
    # shellcheck disable=SC2086 # two numbers
    write_routes $weights
    followed=0
    for _ in $(seq 50); do
      [ "$(routed_generation)" = "$generation" ] && { followed=1; break; }
      sleep 0.1
    done
    follow_ms=$(awk -v a="$flip_start" -v b="$(now)" 'BEGIN {printf "%.0f", (b - a) * 1000}')
    if [ "$followed" = 1 ]; then
      follow_max=$((follow_ms > follow_max ? follow_ms : follow_max))
      log "t=${elapsed}s flip $flips: weights ${weights/ //}, generation $generation followed within ${follow_ms} ms"
    else
      missed_flips=$((missed_flips + 1))
      log "t=${elapsed}s flip $flips: generation $generation NOT in /debug/routes after 5 s"
    fi
  fi
  tick=$((tick + 1))
done

load_status=0
wait "$load_plain_pid" || load_status=$?
if [ -n "${load_stream_pid:-}" ]; then wait "$load_stream_pid" || load_status=$?; fi
[ -s "$tmp/load-plain.json" ] || die "http_load (plain) gave no result: $(cat "$tmp/load-plain.err")"
final_counts=$(router_counts)
[ -z "$csv_copy" ] || cp "$csv" "$csv_copy"

echo "# Soak: kiln-router + 2 kiln-worker serve, $duration s"
echo
echo "Machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(uname -sr); load average (1 min) during the run: $(printf '%s\n' "${loads[@]}" | sort -n | sed -n '1p;$p' | paste -sd- -), at the end $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Binaries: $versions (from $build)."
echo "Load: $plain_clients plain + $stream_clients streaming clients (closed loop, 16 tokens, --timeout 10s) through kiln-router;"
echo "weights flipped $flips times (10/90, 90/10, 10/90, 100/0, ...), $missed_flips missed, the slowest followed within $follow_max ms."
echo "Command: $command_line"
echo
python3 - "$csv" "$warmup" "$tmp/load-plain.json" "$tmp/load-stream.json" "$final_counts" \
  "$(curl -sf "http://127.0.0.1:$port_router/metrics" || true)" <<'PY'
import csv, json, os, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1])))
warmup = float(sys.argv[2])
loads = [json.loads(open(p).read()) for p in sys.argv[3:5] if os.path.exists(p) and os.path.getsize(p)]
requests, non200, router_errors, v1, v2 = (int(x) for x in sys.argv[5].split())
metrics = sys.argv[6]

print("Requests:")
print()
print("| load | requests | ok | errors | error kinds | statuses | answered by |")
print("|---|---:|---:|---:|---|---|---|")
for l in loads:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(l["errorKinds"].items())) or "-"
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(l["statuses"].items()))
    backends = ", ".join(f"{k} {v}" for k, v in sorted(l["backends"].items()))
    print(f"| {'stream' if l['stream'] else 'plain'} x{l['connections']} | {l['requests']} | {l['ok']} | "
          f"{l['errors']} | {kinds} | {statuses} | {backends} |")
print()
by_kind = defaultdict(float)
for line in metrics.splitlines():
    if line.startswith("kiln_router_errors_total"):
        labels, value = line.rsplit(" ", 1)
        kind = labels.split('kind="', 1)[1].split('"', 1)[0] if 'kind="' in labels else "?"
        by_kind[kind] += float(value)
kinds = ", ".join(f"{k} {v:.0f}" for k, v in sorted(by_kind.items())) or "none"
print(f"Router /metrics: {requests} requests (v1 {v1}, v2 {v2}), {non200} answered other than 200, "
      f"kiln_router_errors_total {router_errors} ({kinds}).")
print()

after = [r for r in rows if float(r["seconds"]) >= warmup]
print(f"Memory (VmRSS, KiB; {len(rows)} samples, start = the first at or after the {warmup:g} s warm-up, "
      f"slope = least squares over the {len(after)} samples from then on):")
print()
print("| process | RSS start | RSS end | RSS max | slope KiB/min |")
print("|---|---:|---:|---:|---:|")
for name, col in (("kiln-router", "rss_router_kb"), ("worker v1", "rss_v1_kb"), ("worker v2", "rss_v2_kb")):
    xs = [float(r["seconds"]) / 60 for r in after]
    ys = [float(r[col]) for r in after]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    print(f"| {name} | {ys[0]:.0f} | {ys[-1]:.0f} | {max(float(r[col]) for r in rows):.0f} | "
          f"{slope:+.1f} |")
PY
echo
echo "Samples: $csv${csv_copy:+ (copied to $csv_copy)}"
for f in router worker-v1 worker-v2; do
  if grep -qiE '"level":"(warn|error)"|error' "$tmp/$f.log"; then
    log "$f logged warnings or errors: $(grep -ciE '"level":"(warn|error)"|error' "$tmp/$f.log") lines, first: $(grep -m1 -iE '"level":"(warn|error)"|error' "$tmp/$f.log")"
  fi
done

failed=$(python3 -c 'import json, sys; print(sum(json.load(open(p))["errors"] for p in sys.argv[1:]))' \
  "$tmp"/load-*.json)
read -r _ non200 router_errors _ _ <<<"$final_counts"
if [ "$failed" != 0 ] || [ "$non200" != 0 ] || [ "$router_errors" != 0 ] || [ "$missed_flips" != 0 ] || [ "$load_status" != 0 ]; then
  log "FAILED: $failed requests failed at the clients, $non200 non-200 answers and $router_errors errors at the router, $missed_flips flips missed (http_load status $load_status)"
  exit 1
fi
log "no request failed"
