#!/usr/bin/env bash
# The README's main command: installs what is missing, builds kiln, and brings up
# the local multi-cluster control plane (2 clusters of 4 fake 8-GPU nodes) that
# kiln's operator will place work on. It stays up until `scripts/demo.sh down`.
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
  cat <<MSG

Next steps:
  export KUBECONFIG=$demo_dir/kubeconfig PATH=$(kiln_tools_bin):\$PATH
  kubectl config get-contexts
  kubectl --context kiln-1 get nodes -L nvidia.com/gpu.product,topology.kubernetes.io/zone,kiln.dev/nvlink-domain
  build/dev/worker/kiln-worker --version
Stop everything with: scripts/demo.sh down
MSG
  ;;
down) python3 "$KILN_ROOT/scripts/localcluster.py" down --dir "$demo_dir" ;;
status) python3 "$KILN_ROOT/scripts/localcluster.py" status --dir "$demo_dir" ;;
*) die "unknown demo command '$1'" "use: scripts/demo.sh [up|down|status]" ;;
esac
