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

# The Gateway API CRDs come from a module that go.sum pins: a go.sum that does
# not match the module is refused (the module is already in Go's module cache
# once setup has run, so no network is needed to see it), and so is a go.mod
# that pins another version than scripts/lib/common.sh.
mkdir -p "$SCRATCH/root-sum/tools" "$SCRATCH/root-mod/tools"
cp -r "$ROOT/tools/gateway-api" "$SCRATCH/root-sum/tools/"
sed -i 's/ h1:[A-Za-z0-9+]/ h1:AAAA/' "$SCRATCH/root-sum/tools/gateway-api/go.sum"
expect "a Gateway API module that go.sum does not pin is refused" 1 \
  "checksum mismatch" "downloading sigs.k8s.io/gateway-api v1.6.3 failed" -- \
  env GOPROXY=off KILN_ROOT="$SCRATCH/root-sum" KILN_CACHE_DIR="$SCRATCH/cache5" \
  bash "$ROOT/scripts/build-tools.sh" gateway-api
cp -r "$ROOT/tools/gateway-api" "$SCRATCH/root-mod/tools/"
sed -i 's/^require sigs.k8s.io\/gateway-api .*/require sigs.k8s.io\/gateway-api v1.5.1/' \
  "$SCRATCH/root-mod/tools/gateway-api/go.mod"
expect "a Gateway API pin that disagrees with common.sh is named" 1 \
  "tools/gateway-api pins sigs.k8s.io/gateway-api v1.5.1 but scripts/lib/common.sh says v1.6.3" -- \
  env GOPROXY=off KILN_ROOT="$SCRATCH/root-mod" KILN_CACHE_DIR="$SCRATCH/cache6" \
  bash "$ROOT/scripts/build-tools.sh" gateway-api

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
