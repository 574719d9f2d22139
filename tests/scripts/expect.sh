# shellcheck shell=bash
# Helpers of the error-path script tests. Source it after setting SCRATCH (a
# scratch folder); it counts results in `passed` and `failed`.
passed=0
failed=0

# A PATH holding every command of this machine's PATH except the named ones.
path_without() {
  local dir="$SCRATCH/path-without-$(echo "$*" | tr ' ' '-')" d f name
  mkdir -p "$dir"
  IFS=: read -ra dirs <<<"$PATH"
  for d in "${dirs[@]}"; do
    for f in "$d"/*; do
      name="$(basename "$f")"
      [ -x "$f" ] && [ ! -e "$dir/$name" ] || continue
      case " $* " in *" $name "*) continue ;; esac
      ln -s "$f" "$dir/$name"
    done
  done
  printf '%s' "$dir"
}

# expect NAME WANT_RC PATTERN... -- CMD...: CMD exits WANT_RC and its output matches every PATTERN.
expect() {
  local name=$1 want_rc=$2
  shift 2
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local out rc ok=1 p
  out="$("$@" 2>&1)"
  rc=$?
  [ "$rc" = "$want_rc" ] || ok=0
  for p in "${patterns[@]}"; do grep -qF -- "$p" <<<"$out" || ok=0; done
  if [ "$ok" = 1 ]; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    printf 'FAIL: %s (exit %s, want %s; patterns: %s)\n--- output ---\n%s\n--------------\n' \
      "$name" "$rc" "$want_rc" "${patterns[*]}" "$out"
  fi
}

