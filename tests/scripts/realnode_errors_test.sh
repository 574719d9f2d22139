#!/usr/bin/env bash
# Setup errors of the local clusters' real nodes: no containerd, runc or CNI
# plugins, a kubelet that fails to start, an image that cannot be imported.
# Each must stop with what is missing or broke and a `fix:` line, and leave
# nothing behind; so must `down` after the supervisor was killed. Needs the Go-built tools (exit 77 = skipped without them).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SCRATCH="$(mktemp -d)"
LC=(python3 "$ROOT/scripts/localcluster.py")
cleanup() {
  local d
  for d in lc-kubelet lc-image lc-crash; do "${LC[@]}" down --dir "$SCRATCH/$d" >/dev/null 2>&1; done
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
source "$(dirname "$0")/expect.sh"
source "$ROOT/scripts/lib/common.sh"
BIN="$(kiln_tools_bin)"
for tool in kube-apiserver kubelet kube-proxy coredns; do
  if [ ! -x "$BIN/$tool" ]; then
    echo "skipped: $BIN/$tool is not built (scripts/build-tools.sh)"
    exit 77
  fi
done
UP=(up --clusters 1 --nodes 1 --real-nodes 1 --timeout 120)

expect "no containerd names it and the package" 1 \
  "real nodes need: containerd (and ctr)" "fix: apt-get install containerd" -- \
  env PATH="$(path_without containerd ctr)" "${LC[@]}" "${UP[@]}" --dir "$SCRATCH/lc-none"

expect "no runc names its path and the package" 1 \
  "runc ($SCRATCH/no-runc)" "fix: apt-get install runc" -- \
  env KILN_RUNC="$SCRATCH/no-runc" "${LC[@]}" "${UP[@]}" --dir "$SCRATCH/lc-none"

expect "no CNI plugins names their folder and the package" 1 \
  "the CNI plugins bridge, host-local, loopback and portmap in $SCRATCH/no-cni" \
  "fix: apt-get install containernetworking-plugins" -- \
  env KILN_CNI_BIN_DIR="$SCRATCH/no-cni" "${LC[@]}" "${UP[@]}" --dir "$SCRATCH/lc-none"

expect "an archive that does not exist is named before anything starts" 1 \
  "image archive $SCRATCH/missing.tar does not exist" "fix: build it first" -- \
  "${LC[@]}" "${UP[@]}" --dir "$SCRATCH/lc-none" --image "$SCRATCH/missing.tar"

# A kubelet that cannot start: the rest of the tools are the real ones.
mkdir -p "$SCRATCH/bin"
for f in "$BIN"/*; do ln -s "$f" "$SCRATCH/bin/"; done
rm "$SCRATCH/bin/kubelet"
printf '#!/bin/sh\necho "kubelet: failed to load kubelet config file (simulated)" >&2\nexit 1\n' \
  >"$SCRATCH/bin/kubelet"
chmod +x "$SCRATCH/bin/kubelet"
expect "a kubelet that exits names it, shows its log and how to go on" 1 \
  "kiln-1-real-0/kubelet of cluster kiln-1 exited with code 1" \
  "failed to load kubelet config file (simulated)" "fix: read the log above" -- \
  "${LC[@]}" "${UP[@]}" --dir "$SCRATCH/lc-kubelet" --bin-dir "$SCRATCH/bin"
expect "after the failed start, down leaves nothing behind" 0 "no processes, ports, cgroups" -- \
  "${LC[@]}" down --dir "$SCRATCH/lc-kubelet"

head -c 4096 /dev/urandom >"$SCRATCH/garbage.tar"
expect "an archive containerd cannot import names the archive and what it must be" 1 \
  "importing $SCRATCH/garbage.tar into kiln-1-real-0 failed" "fix: check that" -- \
  "${LC[@]}" "${UP[@]}" --dir "$SCRATCH/lc-image" --image "$SCRATCH/garbage.tar"
expect "after the failed import, down leaves nothing behind" 0 "no processes, ports, cgroups" -- \
  "${LC[@]}" down --dir "$SCRATCH/lc-image"

expect "import-image where no clusters run says so" 1 \
  "no local clusters in $SCRATCH/lc-image" -- \
  "${LC[@]}" import-image --dir "$SCRATCH/lc-image" "$SCRATCH/garbage.tar"

expect "--image without real nodes says what to add" 1 \
  "--image needs real nodes to import into" "fix: add --real-nodes N" -- \
  "${LC[@]}" up --dir "$SCRATCH/lc-none" --image "$SCRATCH/garbage.tar"

# A crash: the supervisor is killed while a pod runs (containerd shims and
# containers outlive it); `down` must still remove every trace.
"${LC[@]}" "${UP[@]}" --dir "$SCRATCH/lc-crash" >/dev/null 2>&1
KC="$SCRATCH/lc-crash/kiln-1/kubeconfig"
"$BIN/kubectl" --kubeconfig "$KC" run crash --image registry.k8s.io/pause:3.10 \
  --image-pull-policy Never --overrides '{"spec":{"nodeName":"kiln-1-real-0"}}' >/dev/null
"$BIN/kubectl" --kubeconfig "$KC" wait --for=condition=Ready pod/crash --timeout=60s >/dev/null
kill -9 "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["supervisorPid"])' \
  "$SCRATCH/lc-crash/state.json")"
expect "after the supervisor is killed with a pod running, down leaves nothing behind" 0 \
  "no processes, ports, cgroups, network interfaces or mounts left" -- \
  "${LC[@]}" down --dir "$SCRATCH/lc-crash"

echo "real-node setup errors: $passed passed, $failed failed"
[ "$failed" = 0 ]
