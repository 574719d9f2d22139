#!/usr/bin/env bash
# Installs charts/kiln into the local control plane (cluster kiln-1 of
# $KILN_LOCALCLUSTER_DIR) and checks what a real apiserver makes of it:
#   - helm install into a fresh namespace that enforces the "restricted" Pod
#     Security Standard; the three CRDs become Established; the Deployment,
#     ServiceAccount, metrics Service and RBAC exist; the operator's pods are
#     admitted and roll out (kwok plays the kubelet: it marks pods Running and
#     Ready without running the image, so this proves admission and
#     scheduling, not the binary);
#   - the ServiceAccount gets exactly the access the chart promises (asked of
#     the apiserver's RBAC authorizer with SubjectAccessReviews);
#   - helm upgrade with a changed logLevel reaches the Deployment's pods;
#   - helm uninstall removes the CRDs with crds.keep=false and keeps them with
#     crds.keep=true (the test deletes them afterwards); the second release
#     also deploys the router, whose pods must be admitted the same way.
# It owns the kiln.dev CRDs on kiln-1 while it runs, and fails if they exist
# when it starts (CTest runs it under RESOURCE_LOCK kiln_crds).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
BIN="$(kiln_tools_bin)"
HELM="$BIN/helm"
KUBECTL="$BIN/kubectl"
CHART="$ROOT/charts/kiln"
CRDS=(crd/trainingjobs.kiln.dev crd/modeldeployments.kiln.dev crd/memberclusters.kiln.dev)
TIMEOUT=90s

for tool in "$HELM" "$KUBECTL"; do
  [ -x "$tool" ] || die "$tool not found" "run scripts/setup.sh (KILN_CACHE_DIR=$KILN_CACHE_DIR)"
done
[ -n "${KILN_LOCALCLUSTER_DIR:-}" ] || die "KILN_LOCALCLUSTER_DIR is not set" \
  "run it through ctest (fixture kiln_controlplane), or start
  scripts/localcluster.py up --dir DIR and set KILN_LOCALCLUSTER_DIR=DIR"
export KUBECONFIG="$KILN_LOCALCLUSTER_DIR/kiln-1/kubeconfig"
[ -f "$KUBECONFIG" ] || die "no kubeconfig at $KUBECONFIG" \
  "start the control plane: scripts/localcluster.py up --dir $KILN_LOCALCLUSTER_DIR"

SCRATCH="$(mktemp -d)"
# Keeps helm away from the user's repositories, plugins and registry logins.
export HELM_CONFIG_HOME="$SCRATCH/helm/config" HELM_CACHE_HOME="$SCRATCH/helm/cache" \
  HELM_DATA_HOME="$SCRATCH/helm/data"
suffix="$(date +%s)-$$"
NAMESPACE="kiln-helm-$suffix"
RELEASES=()

k() { "$KUBECTL" "$@"; }
h() { "$HELM" "$@"; }

cleanup() {
  local release
  for release in "${RELEASES[@]}"; do
    h uninstall "$release" -n "$NAMESPACE" --ignore-not-found >/dev/null 2>&1 || true
    # CRDs kept by a crds.keep=true release, or left by a failure halfway.
    k delete crd -l "app.kubernetes.io/instance=$release" --ignore-not-found >/dev/null 2>&1 || true
  done
  k delete namespace "$NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

source "$(dirname "$0")/checks.sh"

# allowed SA VERB GROUP RESOURCE NAMESPACE: "true" or "false", as the RBAC
# authorizer answers for ServiceAccount SA (of $NAMESPACE). A
# SubjectAccessReview needs no discovery, so it also works for kinds the
# cluster does not serve (HTTPRoute).
allowed() {
  local sa=$1 verb=$2 group=$3 resource=$4 ns=$5
  k create -o jsonpath='{.status.allowed}' -f - <<EOF
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: system:serviceaccount:$NAMESPACE:$sa
  groups: [system:serviceaccounts, "system:serviceaccounts:$NAMESPACE", system:authenticated]
  resourceAttributes: {verb: $verb, group: "$group", resource: $resource, namespace: "$ns"}
EOF
}

# operator_args RELEASE: the operator container's args, one a line.
operator_args() {
  k -n "$NAMESPACE" get deployment "$1-operator" \
    -o jsonpath='{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}'
}

# rolled_out NAME DEPLOYMENT: the Deployment's pods are created, scheduled and
# Ready; on failure shows why pods were not created (e.g. Pod Security).
rolled_out() {
  local name=$1 deployment=$2 out
  if out="$(k -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout="$TIMEOUT" 2>&1)"; then
    ok "$name"
  else
    fail "$name" "$out
$(k -n "$NAMESPACE" get events --field-selector reason=FailedCreate 2>&1 | tail -3)"
  fi
}

# helm_install RELEASE ARGS...: helm install into $NAMESPACE; records RELEASE for cleanup.
helm_install() {
  local release=$1
  shift
  RELEASES+=("$release")
  expect_ok "helm install $release $*" h install "$release" "$CHART" -n "$NAMESPACE" "$@"
}

# The test creates and deletes cluster-scoped CRDs: someone else's must not be there.
existing="$(k get "${CRDS[@]}" --ignore-not-found -o name 2>&1)" ||
  die "cannot query cluster kiln-1 ($KUBECONFIG): $existing" \
    "is the control plane in $KILN_LOCALCLUSTER_DIR up? (scripts/localcluster.py status --dir ...)"
if [ -n "$existing" ]; then
  die "kiln CRDs already exist on cluster kiln-1 ($KUBECONFIG):
$existing
$(k get "${CRDS[@]}" --ignore-not-found -L app.kubernetes.io/instance,app.kubernetes.io/managed-by 2>&1)" \
    "this test installs and deletes them: remove them (kubectl delete crd ...), or give the
  test that left them RESOURCE_LOCK kiln_crds"
fi

# A fresh namespace that rejects any pod short of the "restricted" Pod Security Standard.
k create namespace "$NAMESPACE" >/dev/null
k label namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null

# --- Release 1: crds.keep=false -------------------------------------------
R1="kiln-a-$$"
OP="$R1-operator"
helm_install "$R1" --set crds.keep=false --set logLevel=info
expect_ok "CRDs Established" k wait --for condition=established --timeout="$TIMEOUT" "${CRDS[@]}"
expect_ok "namespaced objects exist" k -n "$NAMESPACE" get "deployment/$OP" "serviceaccount/$OP" \
  "service/$OP-metrics" "role/$OP-leader-election" "rolebinding/$OP-leader-election"
expect_ok "cluster-scoped RBAC exists" k get "clusterrole/$OP" "clusterrolebinding/$OP"
rolled_out "operator pods admitted under restricted Pod Security and rolled out" "$OP"
if notes="$(h get notes "$R1" -n "$NAMESPACE" 2>&1)" && grep -qF "kubectl get crds" <<<"$notes" &&
  grep -qF "port-forward service/$OP-metrics" <<<"$notes"; then
  ok "NOTES name the next steps"
else
  fail "NOTES name the next steps" "$notes"
fi

# The ServiceAccount's access, granted and refused, as the apiserver decides it.
# VERB GROUP RESOURCE NAMESPACE WANT
while read -r verb group resource ns want; do
  [ "$group" = core ] && group=""
  [ "$ns" = - ] && ns=""
  [ "$ns" = release ] && ns="$NAMESPACE"
  got="$(allowed "$OP" "$verb" "$group" "$resource" "$ns" 2>&1)" || true
  if [ "$got" = "$want" ]; then
    ok "RBAC: $verb ${group:-core}/$resource in ${ns:-all namespaces} = $want"
  else
    fail "RBAC: $verb ${group:-core}/$resource in ${ns:-all namespaces}" "want $want, got: $got"
  fi
done <<'EOF'
watch kiln.dev trainingjobs - true
patch kiln.dev modeldeployments - true
update kiln.dev memberclusters/status - true
update kiln.dev trainingjobs/finalizers - true
create kiln.dev trainingjobs - false
delete kiln.dev modeldeployments - false
create core pods - true
delete apps deployments - true
create core events - true
list core secrets - true
create core secrets - false
update core secrets - false
delete core nodes - false
update gateway.networking.k8s.io httproutes - true
create gateway.networking.k8s.io httproutes - false
update coordination.k8s.io leases release true
update coordination.k8s.io leases kube-system false
create rbac.authorization.k8s.io clusterroles - false
delete apiextensions.k8s.io customresourcedefinitions - false
EOF

# Upgrade with a changed value: the new args reach a rolled-out ReplicaSet.
expect_ok "helm upgrade --set logLevel=debug" \
  h upgrade "$R1" "$CHART" -n "$NAMESPACE" --reuse-values --set logLevel=debug
if args="$(operator_args "$R1" 2>&1)" && grep -qx -- '--log-level=debug' <<<"$args"; then
  ok "upgrade changed the operator's --log-level"
else
  fail "upgrade changed the operator's --log-level" "$args"
fi
rolled_out "upgraded operator rolled out" "$OP"
revision="$(h history "$R1" -n "$NAMESPACE" --max 1 -o json 2>&1)" || true
if grep -qF '"revision":2,' <<<"$revision"; then
  ok "release at revision 2"
else
  fail "release at revision 2" "$revision"
fi

expect_ok "helm uninstall $R1" h uninstall "$R1" -n "$NAMESPACE" --wait --timeout "$TIMEOUT"
expect_ok "crds.keep=false: uninstall deleted the CRDs" \
  k wait --for=delete --timeout="$TIMEOUT" "${CRDS[@]}"
if left="$(k get "clusterrole/$OP" "clusterrolebinding/$OP" --ignore-not-found -o name 2>&1)" &&
  [ -z "$left" ]; then
  ok "uninstall deleted the cluster-scoped RBAC"
else
  fail "uninstall deleted the cluster-scoped RBAC" "$left"
fi

# --- Release 2: crds.keep=true (the default) -------------------------------
# With the router on: its Deployment and Service are accepted and its pods admitted too.
R2="kiln-b-$$"
helm_install "$R2" --set router.enabled=true
expect_ok "CRDs Established (crds.keep=true)" \
  k wait --for condition=established --timeout="$TIMEOUT" "${CRDS[@]}"
expect_ok "router Service exists" k -n "$NAMESPACE" get "service/$R2-router"
rolled_out "router pods admitted under restricted Pod Security and rolled out" "$R2-router"
expect_ok "helm uninstall $R2" h uninstall "$R2" -n "$NAMESPACE" --wait --timeout "$TIMEOUT"
# NAME POLICY DELETION-TIMESTAMP per CRD: kept means "keep" and not being deleted.
columns='{.metadata.name} {.metadata.annotations.helm\.sh/resource-policy} {.metadata.deletionTimestamp}'
if kept="$(k get "${CRDS[@]}" -o jsonpath="{range .items[*]}$columns{\"\\n\"}{end}" 2>&1)" &&
  [ "$(grep -c ' keep $' <<<"$kept")" = 3 ]; then
  ok "crds.keep=true: uninstall kept the 3 CRDs"
else
  fail "crds.keep=true: uninstall kept the 3 CRDs" "$kept"
fi
expect_ok "kept CRDs deleted by hand" \
  k delete crd -l "app.kubernetes.io/instance=$R2" --wait --timeout="$TIMEOUT"

finish "helm install"
