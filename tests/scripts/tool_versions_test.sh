#!/usr/bin/env bash
# The Go-built tools report the pinned versions, and the -X ldflags took effect:
# kubectl/apiserver say v1.33.13 (not v0.0.0-master), and helm assumes
# Kubernetes 1.33 rather than its built-in default of 1.20.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
BIN="$(kiln_tools_bin)"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
passed=0
failed=0

check() {  # check NAME WANT CMD...: CMD's output contains WANT.
  local name=$1 want=$2 out
  shift 2
  out="$("$@" 2>&1)"
  if grep -qF -- "$want" <<<"$out"; then
    passed=$((passed + 1)); echo "ok: $name"
  else
    failed=$((failed + 1)); printf 'FAIL: %s: want %q in:\n%s\n' "$name" "$want" "$out"
  fi
}

check "kubectl client version" "\"gitVersion\": \"$KILN_KUBE_VERSION\"" "$BIN/kubectl" version --client -o json
check "kube-apiserver version" "Kubernetes $KILN_KUBE_VERSION" "$BIN/kube-apiserver" --version
check "kube-controller-manager version" "Kubernetes $KILN_KUBE_VERSION" "$BIN/kube-controller-manager" --version
check "kube-scheduler version" "Kubernetes $KILN_KUBE_VERSION" "$BIN/kube-scheduler" --version
check "kubelet version" "Kubernetes $KILN_KUBE_VERSION" "$BIN/kubelet" --version
check "kube-proxy version" "Kubernetes $KILN_KUBE_VERSION" "$BIN/kube-proxy" --version
check "coredns version" "CoreDNS-${KILN_COREDNS_VERSION#v}" "$BIN/coredns" -version
check "coredns has the kubernetes plugin" "kubernetes" "$BIN/coredns" -plugins
check "etcd version" "etcd Version: ${KILN_ETCD_VERSION#v}" "$BIN/etcd" --version
check "etcdctl version" "etcdctl version: ${KILN_ETCD_VERSION#v}" "$BIN/etcdctl" version
check "kwok version" "kwok version $KILN_KWOK_VERSION" "$BIN/kwok" --version
check "helm version" "Version:\"$KILN_HELM_VERSION\"" "$BIN/helm" version

# A chart that only renders on Kubernetes >= 1.33 and prints the version helm assumes.
mkdir -p "$SCRATCH/chart/templates"
cat >"$SCRATCH/chart/Chart.yaml" <<'YAML'
apiVersion: v2
name: kube-version-probe
version: 0.1.0
kubeVersion: ">= 1.33.0-0"
YAML
echo 'kubeVersion: {{ .Capabilities.KubeVersion.Version }}' >"$SCRATCH/chart/templates/probe.yaml"
minor="${KILN_KUBE_VERSION#v1.}"
check "helm assumes Kubernetes 1.${minor%%.*} offline" "kubeVersion: v1.${minor%%.*}" \
  "$BIN/helm" template probe "$SCRATCH/chart"

echo "tools: $passed passed, $failed failed"
[ "$failed" = 0 ]
