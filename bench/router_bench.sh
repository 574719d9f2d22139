#!/usr/bin/env bash
# kiln-router against nginx as a weighted proxy, side by side on loopback, in
# one run over the same two backends (bench/fake_backend, or kiln-worker serve
# with --backend worker; 90/10):
# requests/s and added p50/p99 latency (through the proxy minus direct to a
# backend, same round) at several client counts, streaming TTFT overhead,
# proxy CPU per request and memory. Rounds alternate direct, router, nginx at
# each level, and the table gives ranges over the rounds. See bench/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/common.sh"

usage() {
  cat <<EOF
Usage: bench/router_bench.sh [options]

Starts two fake backends (v1 weight 90, v2 weight 10), kiln-router with a
routes file and nginx (Debian's nginx-light, its own prefix in a temporary
folder, not the system service) with the equivalent upstream, then runs
bench/http_load against each of direct (backend v1), router and nginx in turn,
for every level, --rounds times; prints the machine, the configuration and a
markdown table. Everything it starts is stopped on exit.

Options:
  --build DIR           kiln's build folder (default build/ci); fake_backend,
                        http_load and kiln-router are built there if missing.
  --rounds N            Rounds of the whole matrix (default 2).
  --seconds S           Seconds per measurement (default 4).
  --levels "C ..."      Concurrent clients, plain completions (default "1 64 256").
  --stream-levels "C ..."  Concurrent clients, streamed completions (default "1 64 256").
  --proxy-threads N     kiln-router's --io-threads and nginx's worker_processes
                        (default: nproc, $(nproc) here).
  --load-threads N      http_load's threads (default 1).
  --chunks N            Events per streamed reply (default 8).
  --chunk-interval D    Time between them (default 5ms).
  --backend fake|worker  The two backends: bench/fake_backend (default: fast,
                        so the proxies' own cost shows), or `kiln-worker serve`
                        on a tiny model trained first (1 layer, 32 channels;
                        16 tokens a request), as behind a real deployment.
  --router-flags "..."  More flags for kiln-router (e.g. "--connect-timeout=1s").
  --also-router BIN     Also measure another kiln-router binary (an older
                        build, to compare builds in the same rounds): target
                        "router-b", right after "router" in each round.
  --no-router           Leave kiln-router out (nginx and direct only).
  --keep                Keep the temporary folder (configs, logs, raw JSON lines).
  -h, --help            Show this help and exit.
EOF
}

command_line="bench/router_bench.sh${*:+ $(printf '%q ' "$@")}"
build="$ROOT/build/ci"
rounds=2
seconds=4
levels="1 64 256"
stream_levels="1 64 256"
proxy_threads="$(nproc)"
load_threads=1
chunks=8
chunk_interval=5ms
with_router=1
router_flags=""
backend=fake
also_router=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="${2:?--build needs a value}"; shift 2 ;;
    --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
    --seconds) seconds="${2:?--seconds needs a value}"; shift 2 ;;
    --levels) levels="${2?--levels needs a value}"; shift 2 ;;
    --stream-levels) stream_levels="${2?--stream-levels needs a value}"; shift 2 ;;
    --proxy-threads) proxy_threads="${2:?--proxy-threads needs a value}"; shift 2 ;;
    --load-threads) load_threads="${2:?--load-threads needs a value}"; shift 2 ;;
    --chunks) chunks="${2:?--chunks needs a value}"; shift 2 ;;
    --chunk-interval) chunk_interval="${2:?--chunk-interval needs a value}"; shift 2 ;;
    --router-flags) router_flags="${2?--router-flags needs a value}"; shift 2 ;;
    --backend) backend="${2:?--backend needs a value}"; shift 2 ;;
    --also-router) also_router="${2:?--also-router needs a value}"; shift 2 ;;
    --no-router) with_router=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1'" "run bench/router_bench.sh --help" ;;
  esac
done
case "$backend" in fake | worker) ;; *) die "--backend must be fake or worker, not '$backend'" "run bench/router_bench.sh --help" ;; esac
for n in "$rounds" "$seconds" "$proxy_threads" "$load_threads" $levels $stream_levels; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive whole number" "run bench/router_bench.sh --help"
done
[[ "$chunks" =~ ^[0-9]+$ ]] || die "--chunks must be a whole number, got '$chunks'"
if [ -n "$also_router" ]; then
  [ -x "$also_router" ] || die "--also-router: no executable $also_router"
  also_router="$(cd "$(dirname "$also_router")" && pwd)/$(basename "$also_router")"
fi

# Binaries: built if missing; the router is skipped while its target does not exist.
fake="$build/bench/fake_backend"
worker="$build/worker/kiln-worker"
load="$build/bench/http_load"
router="$build/router/kiln-router"
[ -f "$build/build.ninja" ] || die "no build in $build" "cmake --preset ci (or pass --build DIR)"
missing=()
[ -x "$fake" ] || missing+=(fake_backend)
[ "$backend" = fake ] || [ -x "$worker" ] || missing+=(kiln-worker)
[ -x "$load" ] || missing+=(http_load)
if [ "$with_router" = 1 ] && [ ! -x "$router" ]; then
  if ninja -C "$build" -t query kiln-router >/dev/null 2>&1; then
    missing+=(kiln-router)
  else
    log "kiln-router: no such target in $build yet (router/ not merged?): benchmarking nginx and direct only"
    with_router=0
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "building ${missing[*]} in $build"
  ninja -C "$build" "${missing[@]}" >&2 || die "build of ${missing[*]} failed"
fi
if ! command -v nginx >/dev/null 2>&1; then
  log "nginx missing: installing Debian's nginx-light"
  { apt-get install -y nginx-light || { apt-get update && apt-get install -y nginx-light; }; } >&2 ||
    die "could not install nginx-light" "apt-get install -y nginx-light (as root)"
fi
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
  die "$name did not answer 200 at $url within 10 s (last: $code); logs in $tmp" ""
}
# The process and its children (nginx's workers): "pid pid ...".
family() { echo "$1 $(ps -o pid= --ppid "$1" | xargs)"; }
# Resident and peak memory of the processes, summed, in KiB: "rss hwm".
memory_kib() {
  local pid rss=0 hwm=0 r h
  for pid in $(family "$1"); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    h=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    rss=$((rss + ${r:-0})) hwm=$((hwm + ${h:-0}))
  done
  echo "$rss $hwm"
}
# CPU time of the processes' threads in ns (schedstat: exact, where /proc/PID/stat
# counts ticks), and their context switches: "ns switches".
cpu_and_switches() {
  local pid
  for pid in $(family "$1"); do
    cat /proc/"$pid"/task/*/schedstat 2>/dev/null || true
    awk '/^(non)?voluntary_ctxt_switches:/ {print "switches", $2}' /proc/"$pid"/task/*/status 2>/dev/null || true
  done | awk '$1 == "switches" {c += $2; next} {t += $1} END {printf "%.0f %.0f\n", t, c}'
}

port_v1=$(free_port) port_v2=$(free_port) port_router=$(free_port) port_nginx=$(free_port)
port_router_b=$(free_port)
probe='{"model": "chat", "prompt": "ready?", "max_tokens": 1}'
if [ "$backend" = fake ]; then
  backend_text="2 fake_backend (1 I/O thread each), 90/10; streams of $chunks events $chunk_interval apart"
  for v in v1 v2; do
    port_var="port_$v"
    "$fake" --listen "127.0.0.1:${!port_var}" --name "$v" --chunks "$chunks" \
      --chunk-interval "$chunk_interval" >"$tmp/backend-$v.log" 2>&1 &
    pids+=($!)
  done
else
  corpus=/usr/share/games/fortunes
  [ -d "$corpus" ] || die "no $corpus to train the served model on" "run scripts/setup.sh (it installs Debian's fortunes)"
  log "training the served model (2 steps of a 1-layer, 32-channel model)"
  "$worker" prepare --input "$corpus" --output "$tmp/data" >"$tmp/prepare.log" 2>&1 ||
    die "kiln-worker prepare failed" "see $tmp/prepare.log (run with --keep)"
  "$worker" train --data "$tmp/data/manifest.json" --steps 2 --layers 1 --heads 2 --channels 32 \
    --batch 2 --seq 64 --checkpoint-dir "$tmp/ckpt" --checkpoint-every 2 >"$tmp/train.log" 2>&1 ||
    die "kiln-worker train failed" "see $tmp/train.log (run with --keep)"
  backend_text="2 kiln-worker serve (1 thread each, a 1-layer 32-channel model, 16 tokens a request), 90/10"
  for v in v1 v2; do
    port_var="port_$v"
    OMP_NUM_THREADS=1 "$worker" serve --checkpoint "$tmp/ckpt" --bind "127.0.0.1:${!port_var}" \
      --model-name chat --model-version "$v" >"$tmp/backend-$v.log" 2>&1 &
    pids+=($!)
  done
fi
wait_ok "backend v1" "http://127.0.0.1:$port_v1/readyz"
wait_ok "backend v2" "http://127.0.0.1:$port_v2/readyz"

if [ "$with_router" = 1 ]; then
  cat >"$tmp/routes.json" <<EOF
{"generation": 1, "routes": [{"name": "default/chat", "models": ["chat"], "host": "", "pathPrefix": "",
  "mirrorPercent": 0, "mirrorVersion": "", "stickyHeader": "", "stickyCookie": "",
  "versions": [
    {"name": "v1", "role": "stable", "weight": 90, "endpoints": ["127.0.0.1:$port_v1"]},
    {"name": "v2", "role": "canary", "weight": 10, "endpoints": ["127.0.0.1:$port_v2"]}]}]}
EOF
  read -ra extra_router_flags <<<"$router_flags"
  "$router" --listen="127.0.0.1:$port_router" --routes="$tmp/routes.json" \
    --io-threads="$proxy_threads" --drain-timeout=5s "${extra_router_flags[@]}" >"$tmp/router.log" 2>&1 &
  router_pid=$!
  pids+=("$router_pid")
  wait_ok kiln-router "http://127.0.0.1:$port_router/readyz"
  wait_ok "kiln-router's proxy" "http://127.0.0.1:$port_router/v1/completions" "$probe"
  if [ -n "$also_router" ]; then
    "$also_router" --listen="127.0.0.1:$port_router_b" --routes="$tmp/routes.json" \
      --io-threads="$proxy_threads" --drain-timeout=5s "${extra_router_flags[@]}" >"$tmp/router-b.log" 2>&1 &
    router_b_pid=$!
    pids+=("$router_b_pid")
    wait_ok "kiln-router (router-b)" "http://127.0.0.1:$port_router_b/v1/completions" "$probe"
  fi
fi

# nginx as a weighted keep-alive proxy, tuned as one would for an SSE API:
# upstream keep-alive with HTTP/1.1, no response buffering, no access log.
mkdir -p "$tmp/nginx/logs" "$tmp/nginx/temp"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $proxy_threads;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/temp/body;
  proxy_temp_path $tmp/nginx/temp/proxy;
  fastcgi_temp_path $tmp/nginx/temp/fastcgi;
  uwsgi_temp_path $tmp/nginx/temp/uwsgi;
  scgi_temp_path $tmp/nginx/temp/scgi;
  upstream chat {
    server 127.0.0.1:$port_v1 weight=90;
    server 127.0.0.1:$port_v2 weight=10;
    keepalive 1024;
    keepalive_requests 100000;
  }
  server {
    listen 127.0.0.1:$port_nginx;
    keepalive_requests 100000;
    location / {
      proxy_pass http://chat;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/logs/error.log" \
  >"$tmp/nginx/stdout.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")
wait_ok nginx "http://127.0.0.1:$port_nginx/v1/completions" "$probe"

targets=(direct)
[ "$with_router" = 1 ] && targets+=(router)
[ "$with_router" = 1 ] && [ -n "$also_router" ] && targets+=(router-b)
targets+=(nginx)
declare -A port_of=([direct]="$port_v1" [router]="$port_router" [router-b]="$port_router_b" [nginx]="$port_nginx")
declare -A pid_of=([router]="${router_pid:-}" [router-b]="${router_b_pid:-}" [nginx]="$nginx_pid")

results="$tmp/results.jsonl"
: >"$results"
# measure ROUND MODE CLIENTS TARGET: one http_load run, its line tagged and kept.
measure() {
  local round="$1" mode="$2" clients="$3" target="$4" stream=() line before="0 0" after="0 0"
  [ "$mode" = stream ] && stream=(--stream)
  local pid="${pid_of[$target]:-}"
  [ -n "$pid" ] && before=$(cpu_and_switches "$pid")
  line=$("$load" --port "${port_of[$target]}" --connections "$clients" --threads "$load_threads" \
    --duration "${seconds}s" --timeout 10s "${stream[@]}") || true
  [ -n "$pid" ] && after=$(cpu_and_switches "$pid")
  [ -n "$line" ] || die "http_load gave no result for $target ($mode, $clients clients)"
  printf '{"round": %d, "mode": "%s", "target": "%s", %s, "load": %s}\n' "$round" "$mode" "$target" \
    "$(awk -v b="$before" -v a="$after" 'BEGIN {
      split(b, x, " "); split(a, y, " ")
      printf "\"proxyCpuS\": %.6f, \"proxySwitches\": %d", (y[1] - x[1]) / 1e9, y[2] - x[2] }')" \
    "$line" >>"$results"
  log "round $round $mode c=$clients $target: $line"
}

declare -A memory_start
for t in router router-b nginx; do [ -n "${pid_of[$t]:-}" ] && memory_start[$t]="$(memory_kib "${pid_of[$t]}")"; done
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
log "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes $proxy_threads; kiln: $(git -C "$ROOT" rev-parse --short=12 HEAD)"
log "backends: $backend_text"
log "warming up each target (1 s, 64 clients, not counted)"
for t in "${targets[@]}"; do
  "$load" --port "${port_of[$t]}" --connections 64 --duration 1s >/dev/null || true
done
for round in $(seq "$rounds"); do
  for clients in $levels; do
    for t in "${targets[@]}"; do measure "$round" plain "$clients" "$t"; done
  done
  for clients in $stream_levels; do
    for t in "${targets[@]}"; do measure "$round" stream "$clients" "$t"; done
  done
done
declare -A memory_end
for t in router router-b nginx; do [ -n "${pid_of[$t]:-}" ] && memory_end[$t]="$(memory_kib "${pid_of[$t]}")"; done

echo "# kiln-router vs nginx on loopback"
echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -sr)."
echo "Config: backends $backend_text; proxy threads $proxy_threads${router_flags:+ (kiln-router $router_flags)}, http_load threads $load_threads,"
echo "$seconds s per cell, $rounds rounds alternating ${targets[*]}."
[ -z "$also_router" ] || echo "router-b: $also_router"
echo "Command: $command_line"
echo
python3 - "$results" <<'PY'
import json, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1])]
cells = defaultdict(list)  # (mode, clients, target) -> per-round rows
by_round = {}
for r in rows:
    key = (r["mode"], r["load"]["connections"], r["target"])
    cells[key].append(r)
    by_round[(r["round"],) + key] = r

def span(values, fmt="{:.0f}"):
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else fmt.format(lo) + "–" + fmt.format(hi)

def added(r, field):
    d = by_round.get((r["round"], r["mode"], r["load"]["connections"], "direct"))
    return None if d is None else r["load"][field] - d["load"][field]

for mode in ("plain", "stream"):
    keys = sorted(k for k in cells if k[0] == mode)
    if not keys:
        continue
    print()
    if mode == "plain":
        print("Plain completions (latencies in µs; added = through the proxy minus direct, same round):")
        print()
        print("| clients | target | req/s | p50 | p99 | added p50 | added p99 | proxy CPU µs/req | switches/req | v2 share | errors |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print("Streamed completions (TTFT = first SSE event; µs):")
        print()
        print("| clients | target | streams/s | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | added p99 (whole stream) | proxy CPU µs/stream | switches/stream | errors |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {"direct": 0, "router": 1, "router-b": 2, "nginx": 3}
    for key in sorted(keys, key=lambda k: (k[1], order[k[2]])):
        rs = cells[key]
        target = key[2]
        load = [r["load"] for r in rs]
        errors = sum(l["errors"] for l in load)
        kinds = defaultdict(int)
        for l in load:
            for k, v in l["errorKinds"].items():
                kinds[k] += v
        err = str(errors) + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")" if errors else "")
        cpu = [r["proxyCpuS"] * 1e6 / l["ok"] for r, l in zip(rs, load) if l["ok"] and target != "direct"]
        switches = [r["proxySwitches"] / l["ok"] for r, l in zip(rs, load) if l["ok"] and target != "direct"]
        def addeds(field):
            v = [added(r, field) for r in rs]
            return [x for x in v if x is not None] if target != "direct" else []
        if mode == "plain":
            share = [l["backends"].get("v2", 0) / max(1, sum(l["backends"].values())) * 100 for l in load]
            print(f"| {key[1]} | {target} | {span([l['rps'] for l in load])} | "
                  f"{span([l['latencyP50Us'] for l in load])} | {span([l['latencyP99Us'] for l in load])} | "
                  f"{span(addeds('latencyP50Us'))} | {span(addeds('latencyP99Us'))} | {span(cpu, '{:.1f}')} | "
                  f"{span(switches, '{:.2f}')} | "
                  f"{span(share, '{:.1f}') + '%' if target != 'direct' else '-'} | {err} |")
        else:
            print(f"| {key[1]} | {target} | {span([l['rps'] for l in load])} | "
                  f"{span([l['ttftP50Us'] for l in load])} | {span([l['ttftP99Us'] for l in load])} | "
                  f"{span(addeds('ttftP50Us'))} | {span(addeds('ttftP99Us'))} | {span(addeds('latencyP99Us'))} | "
                  f"{span(cpu, '{:.1f}')} | {span(switches, '{:.1f}')} | {err} |")
PY
echo
echo "Memory (KiB, nginx: master and workers summed):"
echo
echo "| proxy | RSS at start | RSS at end | peak RSS |"
echo "|---|---:|---:|---:|"
for t in router router-b nginx; do
  [ -n "${memory_end[$t]:-}" ] || continue
  read -r rss0 _ <<<"${memory_start[$t]}"
  read -r rss1 hwm1 <<<"${memory_end[$t]}"
  echo "| $t | $rss0 | $rss1 | $hwm1 |"
done
if [ "$with_router" = 1 ] && grep -qiE 'error|warn' "$tmp/router.log"; then
  log "kiln-router logged warnings or errors: $(grep -ciE 'error|warn' "$tmp/router.log") lines, first: $(grep -m1 -iE 'error|warn' "$tmp/router.log")"
fi
if [ -s "$tmp/nginx/logs/error.log" ]; then
  log "nginx logged: $(wc -l <"$tmp/nginx/logs/error.log") lines, first: $(head -1 "$tmp/nginx/logs/error.log")"
fi
