#!/usr/bin/env bash
# The README's main command: kiln's story, for real, on local clusters.
# Installs what is missing (scripts/setup.sh), builds kiln and its images
# (scripts/images.sh: kiln-operator, kiln-router, kiln-worker), then
# scripts/demo.py brings up two clusters with real nodes, installs kiln with
# Helm, registers both as MemberClusters, trains a small GPT on the fortunes
# with 2 workers (one killed mid-run, the gang resumes from its checkpoint),
# serves it through kiln-router under load, rolls a better checkpoint out by
# canary steps and lets the quality gate stop a worse one, and prints a
# summary table. The clusters stay up until `scripts/demo.sh down`.
# Usage: scripts/demo.sh [up [--small]|down|status]
#   KILN_DEMO_DIR   where the clusters run (default ~/.cache/kiln/demo)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

demo_dir="${KILN_DEMO_DIR:-$KILN_CACHE_DIR/demo}"
command="${1:-up}"
[ $# -gt 0 ] && shift
case "$command" in
up)
  "$KILN_ROOT/scripts/setup.sh"
  log "building kiln and its images (scripts/images.sh)"
  "$KILN_ROOT/scripts/images.sh"
  log "building kubectl-kiln, the kubectl plugin (build/ci/plugin)"
  ninja -C "$KILN_ROOT/build/ci" ${KILN_JOBS:+-j"$KILN_JOBS"} kubectl-kiln >/dev/null ||
    die "building kubectl-kiln in build/ci failed" "run 'cmake --build --preset ci --target kubectl-kiln' to see the error"
  # On PATH beside kiln's kubectl and helm (the summary's export line).
  ln -sf "$KILN_ROOT/build/ci/plugin/kubectl-kiln" "$(kiln_tools_bin)/kubectl-kiln"
  exec python3 "$KILN_ROOT/scripts/demo.py" up --dir "$demo_dir" "$@"
  ;;
down | status) exec python3 "$KILN_ROOT/scripts/demo.py" "$command" --dir "$demo_dir" ;;
*) die "unknown demo command '$command'" "use: scripts/demo.sh [up [--small]|down|status]" ;;
esac
