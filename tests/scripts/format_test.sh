#!/usr/bin/env bash
# clang-format decides layout: fails listing every C++/CUDA file that differs from it.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
command -v clang-format >/dev/null || { echo "clang-format missing: run scripts/setup.sh"; exit 1; }
passed=0
failed=0
while IFS= read -r f; do
  if clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "not clang-formatted: $f (fix: clang-format -i $f)"
  fi
done < <(git ls-files --cached --others --exclude-standard -- '*.h' '*.cc' '*.cu' '*.cuh' | sort)
echo "format: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
