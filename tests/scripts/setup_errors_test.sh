#!/usr/bin/env bash
# Bad input for the setup scripts: a missing prerequisite or a failed tool build
# must stop with a message saying what is missing and how to fix it.
# Each case runs against a scratch cache, so the real one is never touched.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
source "$(dirname "$0")/expect.sh"

expect "build-tools without go names go and how to get it" 1 \
  "required command 'go' not found" "fix: install Go" -- \
  env PATH="$(path_without go)" KILN_CACHE_DIR="$SCRATCH/cache1" bash "$ROOT/scripts/build-tools.sh" etcd

mkdir -p "$SCRATCH/old-go"
printf '#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && echo go1.19.8 && exit 0\nexit 1\n' >"$SCRATCH/old-go/go"
chmod +x "$SCRATCH/old-go/go"
expect "a Go older than 1.24 is named with the version needed" 1 \
  "Go go1.19.8 is too old" "need Go 1.24 or newer" -- \
  env PATH="$SCRATCH/old-go:$PATH" KILN_CACHE_DIR="$SCRATCH/cache0" bash "$ROOT/scripts/build-tools.sh" etcd

expect "a failed tool build says which tool failed, where the log is, and what to check" 1 \
  "building etcd v3.5.21 failed (full log:" "fix: check that the Go module proxy is reachable" -- \
  env GOPROXY=off GOFLAGS=-mod=mod GOMODCACHE="$SCRATCH/empty-modcache" \
  KILN_CACHE_DIR="$SCRATCH/cache2" bash "$ROOT/scripts/build-tools.sh" etcd

expect "an unknown tool set is rejected with the valid names" 1 \
  "unknown tool set 'kubelet'" "use one of: kube node coredns etcd kwok helm" -- \
  env KILN_CACHE_DIR="$SCRATCH/cache3" bash "$ROOT/scripts/build-tools.sh" kubelet

expect "setup without python3 cannot install CUDA and says so" 1 \
  "required command 'python3' not found" "fix: install Python 3 with pip" -- \
  env PATH="$(path_without python3 nvcc)" KILN_CACHE_DIR="$SCRATCH/cache4" KILN_SKIP_TOOLS=1 \
  CUDA_HOME= CUDA_PATH= bash "$ROOT/scripts/setup.sh"

expect "localcluster without built binaries names them and points to setup" 1 \
  "missing control-plane binaries" "kube-apiserver" "fix: run scripts/setup.sh" -- \
  python3 "$ROOT/scripts/localcluster.py" up --dir "$SCRATCH/lc" --bin-dir "$SCRATCH/no-bin"

expect "localcluster down on an unknown directory is a no-op" 0 \
  "nothing to tear down" -- \
  python3 "$ROOT/scripts/localcluster.py" down --dir "$SCRATCH/never-started"

mkdir -p "$SCRATCH/precious"
echo keep >"$SCRATCH/precious/file"
expect "localcluster refuses to replace a directory it did not make" 1 \
  "is not empty and is not a kiln run directory" -- \
  python3 "$ROOT/scripts/localcluster.py" up --dir "$SCRATCH/precious"
expect "localcluster down leaves a foreign directory alone" 1 \
  "is not a kiln run directory" -- \
  python3 "$ROOT/scripts/localcluster.py" down --dir "$SCRATCH/precious"
expect "the foreign directory's contents survived" 0 "keep" -- cat "$SCRATCH/precious/file"

echo "scripts: $passed passed, $failed failed"
[ "$failed" = 0 ]
