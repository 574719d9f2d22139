#!/usr/bin/env bash
# bench/http_load against bench/fake_backend (plain and streamed) and against
# canned responses sent a byte at a time (http_edge_server.py): Content-Length,
# chunked with extensions and trailers, 100 Continue, bodies to the end of the
# connection, Connection: close, and the errors it must count. No timings.
#   tests/bench/http_load_test.sh HTTP_LOAD FAKE_BACKEND
set -uo pipefail
load="$1" fake="$2"
here="$(cd "$(dirname "$0")" && pwd)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT
passed=0
failed=0

# check NAME WANT_RC PYTHON_CONDITION -- ARGS...: http_load ARGS exits WANT_RC
# and its JSON line `r` satisfies the condition.
check() {
  local name="$1" want_rc="$2" cond="$3" out rc
  shift 4
  out="$("$load" "$@" 2>&1)"
  rc=$?
  if [ "$rc" = "$want_rc" ] &&
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); sys.exit(0 if eval(sys.argv[2]) else 1)' \
      "$out" "$cond" 2>/dev/null; then
    passed=$((passed + 1)); echo "ok: $name"
  else
    failed=$((failed + 1)); echo "FAIL: $name: want exit $want_rc and $cond; got exit $rc: $out"
  fi
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$fake" --listen "127.0.0.1:$port" --name v1 --chunks 3 --chunk-interval 1ms >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
check "plain, 4 connections" 0 'r["ok"] == 200 and r["errors"] == 0 and r["connects"] == 4 and r["backends"] == {"v1": 200}' -- \
  --port "$port" --connections 4 --requests 200 --duration 30s
check "two threads" 0 'r["ok"] == 200 and r["connects"] == 8' -- \
  --port "$port" --connections 8 --threads 2 --requests 200 --duration 30s
check "streamed" 0 'r["ok"] == 20 and r["errors"] == 0 and r["ttftP50Us"] > 0 and r["ttftP50Us"] <= r["latencyP50Us"]' -- \
  --port "$port" --connections 2 --requests 20 --duration 30s --stream
check "a 404 is an error" 1 'r["errors"] == 5 and r["errorKinds"] == {"status": 5} and r["statuses"] == {"404": 5}' -- \
  --port "$port" --connections 1 --requests 5 --duration 30s --path /nowhere

exec {edge_out}< <(exec python3 "$here/http_edge_server.py")
pids+=($!)
read -r -t 10 edge <&"$edge_out" || { echo "FAIL: http_edge_server.py did not start"; exit 1; }
check "chunked with extensions and a trailer" 0 'r["ok"] == 10 and r["ttftP50Us"] > 0 and r["backends"] == {"edge": 10} and r["connects"] == 2' -- \
  --port "$edge" --connections 2 --requests 10 --duration 30s --stream --path /chunked
check "100 Continue, then Content-Length" 0 'r["ok"] == 10 and r["connects"] == 2' -- \
  --port "$edge" --connections 2 --requests 10 --duration 30s --path /length
check "HTTP/1.0 body to the end of the connection" 0 'r["ok"] == 10 and r["connects"] == 10 and r["ttftP50Us"] > 0' -- \
  --port "$edge" --connections 2 --requests 10 --duration 30s --stream --path /eof
check "Connection: close" 0 'r["ok"] == 10 and r["connects"] == 10' -- \
  --port "$edge" --connections 2 --requests 10 --duration 30s --path /close
check "a stream without [DONE] is an error" 1 'r["errorKinds"] == {"noDone": 4}' -- \
  --port "$edge" --connections 1 --requests 4 --duration 30s --stream --path /length
check "a bad chunk size is an error" 1 'r["ok"] == 0 and r["errorKinds"] == {"broken": 4}' -- \
  --port "$edge" --connections 1 --requests 4 --duration 30s --path /badchunk
check "a body cut short is an error" 1 'r["ok"] == 0 and r["errorKinds"] == {"broken": 4}' -- \
  --port "$edge" --connections 1 --requests 4 --duration 30s --path /short
check "a 503 is an error" 1 'r["errorKinds"] == {"status": 4} and r["statuses"] == {"503": 4}' -- \
  --port "$edge" --connections 1 --requests 4 --duration 30s --path /503

closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
check "nobody listening: connect errors" 1 'r["ok"] == 0 and r["errors"] == 3 and list(r["errorKinds"]) == ["connect"]' -- \
  --port "$closed" --connections 1 --requests 3 --duration 30s
out="$("$load" --connections 1 2>&1)"
if [ $? = 2 ] && grep -q -- "--port is required" <<<"$out"; then
  passed=$((passed + 1)); echo "ok: usage: --port is required"
else
  failed=$((failed + 1)); echo "FAIL: usage: want exit 2 and '--port is required': $out"
fi

echo "http_load: $passed passed, $failed failed"
[ "$failed" = 0 ]
