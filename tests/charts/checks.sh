# Sourced by the chart tests: counters and helpers for a list of named checks
# that all run (one failure does not hide the next), then a summary.
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); printf 'FAIL: %s\n%s\n' "$1" "${2:-}"; }

# expect_ok NAME CMD...: CMD succeeds.
expect_ok() {
  local name=$1 out
  shift
  if out="$("$@" 2>&1)"; then ok "$name"; else fail "$name" "$out"; fi
}

# finish WHAT: prints the summary; the exit status is the verdict.
finish() {
  echo "$1: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}
