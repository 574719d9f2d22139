#!/usr/bin/env bash
# Builds the pinned control-plane tools (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, helm) and the real nodes' tools (kubelet,
# kube-proxy, coredns) and SeaweedFS (weed, whose S3 gateway the storage
# tests run) from the Go module proxy into the cache outside the
# repository, and fetches the Gateway API's standard-channel CRDs (the set
# gateway-api: downloaded, not built). Each set is made again only when its
# version or its wrapper module's go.sum changes.
# Usage: scripts/build-tools.sh [kube|node|coredns|etcd|kwok|helm|seaweedfs|gateway-api]...
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

need go "install Go 1.24 or newer (the go.dev tarball; Debian 12's golang-go is 1.19, too old)"
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0
go_version="$(go env GOVERSION)"
go_minor="$(printf '%s' "$go_version" | sed -E 's/^go1\.([0-9]+).*/\1/')"
if ! [ "$go_minor" -ge 24 ] 2>/dev/null; then
  die "Go $go_version is too old: the pinned Kubernetes, etcd, kwok and helm modules need Go 1.24 or newer" \
    "install Go 1.24+ (the go.dev tarball) and put it first on PATH"
fi

bin_dir="$(kiln_tools_bin)"
mkdir -p "$bin_dir" "$KILN_CACHE_DIR/tools/stamps"

# build_set NAME MODULE VERSION LDFLAGS PKG... : builds PKGs from tools/MODULE into bin_dir.
# A PKG written BIN=IMPORT_PATH is installed as BIN (for main packages whose
# import path does not end in the command's name).
bin_name() { if [[ "$1" == *=* ]]; then printf '%s' "${1%%=*}"; else basename "$1"; fi; }

build_set() {
  local name=$1 module=$2 version=$3 ldflags=$4
  shift 4
  local mod_dir="$KILN_ROOT/tools/$module"
  local key
  key="$version-$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" | sha256sum | cut -c1-16)"
  local stamp="$KILN_CACHE_DIR/tools/stamps/$name"
  local missing=0 pkg
  for pkg in "$@"; do [ -x "$bin_dir/$(bin_name "$pkg")" ] || missing=1; done
  if [ "$missing" = 0 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
    return 0
  fi
  log "building $name $version ($*) - this takes minutes on a cold cache"
  local tmp
  tmp="$(mktemp -d "$KILN_CACHE_DIR/tools/build.XXXXXX")"
  local ok=1
  for pkg in "$@"; do
    if [[ "$pkg" == *=* ]]; then
      (cd "$mod_dir" && go build -ldflags "$ldflags" -o "$tmp/${pkg%%=*}" "${pkg#*=}") >>"$tmp.log" 2>&1 || ok=0
    fi
  done
  local plain=()
  for pkg in "$@"; do [[ "$pkg" == *=* ]] || plain+=("$pkg"); done
  if [ ${#plain[@]} -gt 0 ]; then
    (cd "$mod_dir" && go build -ldflags "$ldflags" -o "$tmp/" "${plain[@]}") >>"$tmp.log" 2>&1 || ok=0
  fi
  if [ "$ok" = 0 ]; then
    tail -n 30 "$tmp.log" >&2
    rm -rf "$tmp"
    die "building $name $version failed (full log: $tmp.log)" \
      "check that the Go module proxy is reachable (go env GOPROXY) and that 'go version' is 1.24 or newer, then rerun scripts/build-tools.sh $name"
  fi
  mv -f "$tmp"/* "$bin_dir/"
  rmdir "$tmp"
  rm -f "$tmp.log"
  echo "$key" >"$stamp"
  log "built $name into $bin_dir"
}

# fetch_gateway_api_crds: downloads sigs.k8s.io/gateway-api at the version
# tools/gateway-api pins (go.sum verifies the module's zip; -mod=readonly
# refuses any other version) and copies its standard-channel CRDs into
# kiln_gateway_api_crds.
fetch_gateway_api_crds() {
  local mod_dir="$KILN_ROOT/tools/gateway-api" module=sigs.k8s.io/gateway-api
  local dest key stamp="$KILN_CACHE_DIR/tools/stamps/gateway-api"
  dest="$(kiln_gateway_api_crds)"
  key="$KILN_GATEWAY_API_VERSION-$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" | sha256sum | cut -c1-16)"
  if [ -f "$dest/gateway.networking.k8s.io_httproutes.yaml" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
    return 0
  fi
  local pinned
  pinned="$(sed -n "s|^require $module ||p" "$mod_dir/go.mod")"
  [ "$pinned" = "$KILN_GATEWAY_API_VERSION" ] ||
    die "tools/gateway-api pins $module $pinned but scripts/lib/common.sh says $KILN_GATEWAY_API_VERSION" \
      "make KILN_GATEWAY_API_VERSION and tools/gateway-api/go.mod agree"
  log "fetching the Gateway API $pinned CRDs"
  local src
  if ! src="$(cd "$mod_dir" && go mod download "$module" && go list -m -f '{{.Dir}}' "$module")"; then
    die "downloading $module $pinned failed" \
      "see the error above: the Go module proxy unreachable (go env GOPROXY) or a download that go.sum refuses; then rerun scripts/build-tools.sh gateway-api"
  fi
  local tmp
  tmp="$(mktemp -d "$KILN_CACHE_DIR/tools/gateway-api.XXXXXX")"
  chmod 0755 "$tmp"
  # The module cache's files are read-only; the copies need not be.
  install -m 0644 "$src"/config/crd/standard/*.yaml "$tmp/"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  echo "$key" >"$stamp"
  log "copied the Gateway API $pinned standard CRDs into $dest"
}

kube_ldflags() {
  local v=${KILN_KUBE_VERSION#v} major minor flags="-s -w" pkg
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KILN_KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}

helm_ldflags() {
  local v=${KILN_KUBE_VERSION#v} major minor flags="-s -w" pkg
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  flags+=" -X helm.sh/helm/v3/internal/version.version=$KILN_HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  printf '%s' "$flags"
}

build_one() {
  case "$1" in
  kube) build_set kube kube "$KILN_KUBE_VERSION" "$(kube_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ;;
  node) build_set node kube "$KILN_KUBE_VERSION" "$(kube_ldflags)" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy ;;
  coredns) build_set coredns coredns "$KILN_COREDNS_VERSION" \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$KILN_COREDNS_VERSION" \
    coredns=kiln.dev/tools/coredns ;;
  etcd) build_set etcd etcd "$KILN_ETCD_VERSION" "-s -w" etcd=go.etcd.io/etcd/server/v3 \
    etcdctl=go.etcd.io/etcd/etcdctl/v3 ;;
  kwok) build_set kwok kwok "$KILN_KWOK_VERSION" \
    "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KILN_KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KILN_KUBE_VERSION#v}" \
    sigs.k8s.io/kwok/cmd/kwok ;;
  helm) build_set helm helm "$KILN_HELM_VERSION" "$(helm_ldflags)" helm.sh/helm/v3/cmd/helm ;;
  seaweedfs)
    if ! [ "$go_minor" -ge 26 ] 2>/dev/null; then
      die "Go $go_version is too old for SeaweedFS (the storage tests' S3 server): it needs Go 1.26.6 or newer" \
        "install Go 1.26.6+ (the go.dev tarball) and put it first on PATH"
    fi
    build_set seaweedfs seaweedfs "$KILN_SEAWEEDFS_VERSION" "-s -w" \
    weed=github.com/seaweedfs/seaweedfs/weed ;;
  gateway-api) fetch_gateway_api_crds ;;
  *) die "unknown tool set '$1'" "use one of: kube node coredns etcd kwok helm seaweedfs gateway-api" ;;
  esac
}

if [ $# -eq 0 ]; then set -- etcd kwok helm kube node coredns seaweedfs gateway-api; fi
for set_name in "$@"; do build_one "$set_name"; done
