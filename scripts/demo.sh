#!/usr/bin/env bash
# The README's main command: installs what is missing, builds kiln, brings up
# the local multi-cluster control plane (2 clusters of 4 fake 8-GPU nodes),
# installs kiln's Helm chart on kiln-1 (CRDs, operator Deployment, RBAC) and
# applies the examples. kwok simulates the nodes, so the operator's pods are
# admitted and scheduled but its image does not run there. It stays up until
# `scripts/demo.sh down`.
# Usage: scripts/demo.sh [up|down|status]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

demo_dir="${KILN_DEMO_DIR:-$KILN_CACHE_DIR/demo}"
case "${1:-up}" in
up)
  "$KILN_ROOT/scripts/setup.sh"
  cd "$KILN_ROOT"
  cmake --preset dev >/dev/null
  cmake --build --preset dev
  python3 "$KILN_ROOT/scripts/localcluster.py" up --dir "$demo_dir" --clusters 2 --nodes 4 --gpus-per-node 8
  export KUBECONFIG="$demo_dir/kubeconfig"
  tools="$(kiln_tools_bin)"
  log "installing the kiln chart on kiln-1"
  "$tools/helm" --kube-context kiln-1 upgrade --install kiln "$KILN_ROOT/charts/kiln" \
    --namespace kiln-system --create-namespace --wait --timeout 2m
  "$tools/kubectl" --context kiln-1 wait --for=condition=Established --timeout=60s \
    crd/trainingjobs.kiln.dev crd/modeldeployments.kiln.dev crd/memberclusters.kiln.dev
  "$tools/kubectl" --context kiln-1 apply -f "$KILN_ROOT/examples/"
  "$tools/kubectl" --context kiln-1 get kiln -A
  cat <<MSG

Next steps:
  export KUBECONFIG=$demo_dir/kubeconfig PATH=$(kiln_tools_bin):\$PATH
  kubectl config get-contexts
  kubectl --context kiln-1 get nodes -L nvidia.com/gpu.product,topology.kubernetes.io/zone,kiln.dev/nvlink-domain
  kubectl --context kiln-1 -n kiln-system get deploy,pods,lease
  kubectl --context kiln-1 get tj,md,mc -A        # the kiln.dev kinds (short names)
  kubectl --context kiln-1 explain trainingjob.spec.failurePolicy
  build/dev/worker/kiln-worker --version
Stop everything with: scripts/demo.sh down
MSG
  ;;
down) python3 "$KILN_ROOT/scripts/localcluster.py" down --dir "$demo_dir" ;;
status) python3 "$KILN_ROOT/scripts/localcluster.py" status --dir "$demo_dir" ;;
*) die "unknown demo command '$1'" "use: scripts/demo.sh [up|down|status]" ;;
esac
