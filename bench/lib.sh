# shellcheck shell=bash
# What the side-by-side comparison scripts (llmc_compare.sh, llama2c_compare.sh,
# llamacpp_compare.sh) share. Source it after scripts/lib/common.sh; it defines
# functions only.

# kiln_bench_build BUILD_DIR WORK TARGET...: configures BUILD_DIR (RelWithDebInfo,
# no CUDA) when it has no CMake cache, then builds TARGETs; logs go to WORK.
kiln_bench_build() {
  local build_dir="$1" work="$2"
  shift 2
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    log "configuring kiln in $build_dir"
    cmake -S "$ROOT" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_CUDA=OFF \
      >"$work/kiln-configure.log" || { tail -20 "$work/kiln-configure.log" >&2; die "kiln configure failed"; }
  fi
  log "building kiln's $* in $build_dir"
  cmake --build "$build_dir" --target "$@" -j"$(nproc)" >"$work/kiln-build.log" ||
    { tail -30 "$work/kiln-build.log" >&2; die "kiln build failed"; }
}

# kiln_numpy_python: prints the first of python3 and /usr/bin/python3 that
# imports numpy (a pyenv shim's python3 may lack it where Debian's has it),
# or dies saying what to install.
kiln_numpy_python() {
  local candidate
  for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import numpy' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  die "no Python 3 with numpy found (tried python3, /usr/bin/python3)" \
    "run scripts/setup.sh (python3-numpy), or python3 -m pip install numpy"
}

# kiln_compile_flags PYTHON BUILD_DIR REGEX: the optimisation flags of the
# sources whose path matches REGEX (a Python regex whose group 1 is the path
# without .cc; test sources excluded), from the build's compile commands:
# "file, file: flags; ...".
kiln_compile_flags() {
  "$1" - "$2/compile_commands.json" "$3" <<'PY'
import json, re, sys
seen = {}
for entry in json.load(open(sys.argv[1])):
    m = re.search(sys.argv[2], entry["file"])
    if not m or m.group(1).endswith("_test"):
        continue
    words = entry.get("command", " ".join(entry.get("arguments", []))).split()
    flags = [w for w in words if re.match(r"-(O|march|mtune|ffast-math|fopenmp|DNDEBUG)", w)]
    seen.setdefault(" ".join(flags), []).append(m.group(1) + ".cc")
print("; ".join(f"{', '.join(files)}: {flags}" for flags, files in seen.items()))
PY
}
