# shellcheck shell=bash
# Shared helpers for kiln's scripts: logging, fatal errors with a fix, and the
# cache layout outside the repository. Source it; it defines no side effects.

KILN_ROOT="${KILN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
KILN_CACHE_DIR="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"

# Pinned versions; the Go wrapper modules under tools/ hold the same pins.
KILN_KUBE_VERSION="v1.33.13"
KILN_ETCD_VERSION="v3.5.21"
KILN_KWOK_VERSION="v0.7.0"
KILN_HELM_VERSION="v3.18.6"
KILN_COREDNS_VERSION="v1.12.0"
# SeaweedFS (Apache-2.0): its S3 gateway is the storage tests' S3 server.
KILN_SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"
# Gateway API: only its standard-channel CRDs are used (no binary is built).
KILN_GATEWAY_API_VERSION="v1.6.3"

# Let ccache share results between checkouts in different folders (CI clones
# afresh each time): paths under the checkout are hashed relative to it.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$KILN_ROOT}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

log() { printf '[kiln %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# die MESSAGE [FIX]: stop with what went wrong and, when known, how to fix it.
die() {
  printf '[kiln] ERROR: %s\n' "$1" >&2
  if [ -n "${2:-}" ]; then printf '[kiln]   fix: %s\n' "$2" >&2; fi
  exit 1
}

# need CMD FIX: fail clearly when a required command is absent.
need() {
  command -v "$1" >/dev/null 2>&1 || die "required command '$1' not found on PATH" "$2"
}

# The folder holding the Go-built tools for the pinned versions.
kiln_tools_bin() { printf '%s/tools/bin\n' "$KILN_CACHE_DIR"; }

# The folder holding the pinned Gateway API release's standard-channel CRDs:
# beside the tools' bin folder, as tests/integration finds it.
kiln_gateway_api_crds() {
  printf '%s/tools/gateway-api/%s\n' "$KILN_CACHE_DIR" "$KILN_GATEWAY_API_VERSION"
}

# The release version, from the one place it is written: CMakeLists.txt's
# project(kiln VERSION x.y.z). Image tags and the chart's appVersion follow it.
kiln_project_version() {
  sed -n 's/^project(kiln VERSION \([0-9][0-9.]*\).*/\1/p' "$KILN_ROOT/CMakeLists.txt"
}
