#!/usr/bin/env bash
# Offline checks of the Helm chart charts/kiln (no cluster needed):
#   - its CRD templates are in step with crds/ (scripts/sync_chart_crds.py --check);
#   - `helm lint --strict` passes with the default values and with every option on;
#   - `helm template` output (and NOTES.txt) matches the golden files in
#     tests/charts/golden/ for the default values, tests/charts/values-all.yaml
#     and tests/charts/values-member.yaml (the router alone, in a hub's member);
#   - each CRD renders exactly as in crds/, plus labels and the keep annotation;
#   - values.schema.json rejects unknown keys and wrong types, naming the key;
#   - every Deployment runs with the restricted security context, and every
#     flag passed to kiln-operator and kiln-router is one it documents;
#   - router.hubKubeconfigSecret mounts the hub's kubeconfig into the router
#     and passes it; operator.enabled=false leaves only the router's objects.
# Usage: helm_test.sh [--update]   (or KILN_UPDATE_GOLDEN=1) rewrites the
# golden files from the current chart instead of comparing; review the diff.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
HELM="$(kiln_tools_bin)/helm"
CHART="$ROOT/charts/kiln"
HERE="$ROOT/tests/charts"
GOLDEN="$HERE/golden"
CHECKS=(python3 "$HERE/chart_checks.py")
RELEASE=kiln
NAMESPACE=kiln-system
# The ServiceMonitors and the PrometheusRule are rendered only when the
# cluster serves their kinds.
MONITORING=(--api-versions monitoring.coreos.com/v1/ServiceMonitor
  --api-versions monitoring.coreos.com/v1/PrometheusRule)

update="${KILN_UPDATE_GOLDEN:-0}"
if [ "${1:-}" = --update ]; then update=1; fi
[ -x "$HELM" ] || die "helm not found at $HELM" \
  "run scripts/setup.sh (KILN_CACHE_DIR=$KILN_CACHE_DIR)"
python3 -c 'import yaml' 2>/dev/null ||
  die "python3 cannot import yaml" "apt-get install python3-yaml (scripts/setup.sh does)"

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
# Keeps helm away from the user's repositories, plugins and registry logins.
export HELM_CONFIG_HOME="$SCRATCH/helm/config" HELM_CACHE_HOME="$SCRATCH/helm/cache" \
  HELM_DATA_HOME="$SCRATCH/helm/data"
source "$(dirname "$0")/checks.sh"

# render OUT ARGS...: helm template the chart into OUT; false (output kept) on error.
render() {
  local out=$1
  shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$out" 2>&1
}

# notes OUT ARGS...: NOTES.txt as rendered by `helm install`. helm template
# leaves NOTES.txt out, so a copy of the chart renders it as a YAML block scalar.
notes() {
  local out=$1 copy="$SCRATCH/notes-chart"
  shift
  rm -rf "$copy" && cp -r "$CHART" "$copy"
  { echo 'notes: |'; sed 's/^/  /' "$copy/templates/NOTES.txt"; } >"$copy/templates/zz-notes.yaml"
  "$HELM" template "$RELEASE" "$copy" --namespace "$NAMESPACE" --show-only templates/zz-notes.yaml \
    "$@" >"$SCRATCH/notes.yaml" 2>&1 || { cat "$SCRATCH/notes.yaml" >"$out"; return 1; }
  python3 -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(sys.stdin)["notes"])' \
    <"$SCRATCH/notes.yaml" >"$out"
}

# golden NAME FILE: FILE equals tests/charts/golden/NAME (or becomes it with --update).
golden() {
  local name=$1 file=$2
  if [ "$update" = 1 ]; then
    cp "$file" "$GOLDEN/$name" && ok "golden $name written"
  elif [ ! -f "$GOLDEN/$name" ]; then
    fail "golden $name" "missing $GOLDEN/$name; run $0 --update and review it"
  elif out="$(diff -u "$GOLDEN/$name" "$file")"; then
    ok "golden $name"
  else
    fail "golden $name differs (if the change is intended: $0 --update)" "$out"
  fi
}

# rejected NAME WANT ARGS...: helm template with ARGS fails, and its error contains WANT.
rejected() {
  local name=$1 want=$2 out
  shift 2
  if out="$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" 2>&1)"; then
    fail "schema rejects $name" "helm template accepted $*"
  elif grep -qF -- "$want" <<<"$out"; then
    ok "schema rejects $name"
  else
    fail "schema rejects $name" "want '$want' in: $out"
  fi
}

# check NAME COMMAND ARG... <FILE: chart_checks.py COMMAND on a render.
check() {
  local name=$1 file=$2 out
  shift 2
  if out="$("${CHECKS[@]}" "$@" <"$file" 2>&1)"; then ok "$name"; else fail "$name" "$out"; fi
}

# count_kind FILE KIND: how many documents of KIND a render holds.
count_kind() { grep -c "^kind: $2\$" "$1" || true; }

expect_ok "CRD templates in step with crds/" python3 "$ROOT/scripts/sync_chart_crds.py" --check
expect_ok "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
expect_ok "helm lint --strict (values-all.yaml)" "$HELM" lint --strict "$CHART" \
  -f "$HERE/values-all.yaml"
expect_ok "helm lint --strict (values-member.yaml)" "$HELM" lint --strict "$CHART" \
  -f "$HERE/values-member.yaml"

# The renders the goldens hold.
declare -A VALUES=([default]="" [all-on]="$HERE/values-all.yaml" [member]="$HERE/values-member.yaml")
for name in default all-on member; do
  args=()
  if [ -n "${VALUES[$name]}" ]; then args=(-f "${VALUES[$name]}" "${MONITORING[@]}"); fi
  if ! render "$SCRATCH/$name.yaml" "${args[@]}"; then
    fail "helm template ($name)" "$(cat "$SCRATCH/$name.yaml")"
    continue
  fi
  "${CHECKS[@]}" golden <"$SCRATCH/$name.yaml" >"$SCRATCH/$name.golden.yaml"
  golden "$name.yaml" "$SCRATCH/$name.golden.yaml"
  if notes "$SCRATCH/$name.notes.txt" "${args[@]}"; then
    golden "$name.notes.txt" "$SCRATCH/$name.notes.txt"
  else
    fail "NOTES.txt renders ($name)" "$(cat "$SCRATCH/$name.notes.txt")"
  fi
  check "restricted security context ($name)" "$SCRATCH/$name.yaml" security
  if [ "$name" != member ]; then
    check "operator flags documented by kiln-operator ($name)" "$SCRATCH/$name.yaml" flags \
      "$ROOT/operator/cmd/main.cc"
  fi
  if [ "$name" != default ]; then
    check "router flags documented by kiln-router ($name)" "$SCRATCH/$name.yaml" router-flags \
      "$ROOT/router/main.cc"
  fi
done

# The hub's kubeconfig: mounted from its Secret and passed to the router, which
# is then granted no ModelDeployments in its own cluster; without it, neither.
check "router.hubKubeconfigSecret mounts and passes the hub kubeconfig (all-on)" \
  "$SCRATCH/all-on.yaml" hub kiln-hub hub.yaml
check "router.hubKubeconfigSecret's key defaults to kubeconfig (member)" \
  "$SCRATCH/member.yaml" hub kiln-hub kubeconfig
if render "$SCRATCH/router-local.yaml" --set router.enabled=true; then
  check "without router.hubKubeconfigSecret the router watches its own cluster" \
    "$SCRATCH/router-local.yaml" hub - -
else
  fail "helm template (router.enabled=true)" "$(cat "$SCRATCH/router-local.yaml")"
fi
if grep -q -- '--hub-context=kiln-1$' "$SCRATCH/all-on.yaml" &&
  ! grep -q -- '--hub-context' "$SCRATCH/member.yaml"; then
  ok "router.hubContext is passed only when set"
else
  fail "router.hubContext is passed only when set" "$(grep -- --hub "$SCRATCH"/{all-on,member}.yaml)"
fi

# operator.enabled=false: the router alone (its ServiceMonitor too), nothing of the operator's.
check "operator.enabled=false renders the router's objects alone (member)" \
  "$SCRATCH/member.yaml" router-only
if [ "$(count_kind "$SCRATCH/member.yaml" ServiceMonitor)" = 1 ]; then
  ok "operator.enabled=false keeps the router's ServiceMonitor alone"
else
  fail "operator.enabled=false keeps the router's ServiceMonitor alone" \
    "$(grep -A3 'kind: ServiceMonitor' "$SCRATCH/member.yaml")"
fi

# CRDs: verbatim from crds/, keep annotation only with crds.keep, none without crds.enabled.
for keep in true false; do
  if render "$SCRATCH/crds-$keep.yaml" --set crds.keep=$keep; then
    check "CRDs rendered verbatim (crds.keep=$keep)" "$SCRATCH/crds-$keep.yaml" crds $keep
  else
    fail "helm template (crds.keep=$keep)" "$(cat "$SCRATCH/crds-$keep.yaml")"
  fi
done
if render "$SCRATCH/no-crds.yaml" --set crds.enabled=false &&
  [ "$(count_kind "$SCRATCH/no-crds.yaml" CustomResourceDefinition)" = 0 ]; then
  ok "crds.enabled=false renders no CRD"
else
  fail "crds.enabled=false renders no CRD" "$(grep -A3 CustomResourceDefinition "$SCRATCH/no-crds.yaml")"
fi

# The ServiceMonitor needs both the value and the kind on the cluster.
render "$SCRATCH/sm-absent.yaml" -f "$HERE/values-all.yaml" || true
if [ "$(count_kind "$SCRATCH/sm-absent.yaml" ServiceMonitor)" = 0 ] &&
  [ "$(count_kind "$SCRATCH/all-on.yaml" ServiceMonitor)" = 2 ] &&
  [ "$(count_kind "$SCRATCH/default.yaml" ServiceMonitor)" = 0 ]; then
  ok "ServiceMonitors (operator, router) only when enabled and monitoring.coreos.com/v1 is served"
else
  fail "ServiceMonitors (operator, router) only when enabled and monitoring.coreos.com/v1 is served"
fi

# The pod's grace period outlasts the operator's graceful shutdown.
if render "$SCRATCH/grace.yaml" --set gracefulShutdownTimeoutSeconds=120 &&
  grep -q -- '--graceful-shutdown-timeout=120s' "$SCRATCH/grace.yaml" &&
  grep -q 'terminationGracePeriodSeconds: 135$' "$SCRATCH/grace.yaml"; then
  ok "terminationGracePeriodSeconds exceeds the graceful-shutdown timeout"
else
  fail "terminationGracePeriodSeconds exceeds the graceful-shutdown timeout" \
    "$(grep -e graceful -e terminationGrace "$SCRATCH/grace.yaml")"
fi

# Unknown keys, at every level, and wrong types are errors naming the key.
rejected "an unknown top-level key" "at '': additional properties 'bogus' not allowed" --set bogus=1
rejected "an unknown key under image" "at '/image': additional properties 'bogus' not allowed" \
  --set image.bogus=1
rejected "an unknown key under crds" "at '/crds': additional properties 'kep' not allowed" \
  --set crds.kep=true
rejected "an unknown key under router.service" \
  "at '/router/service': additional properties 'bogus' not allowed" --set router.service.bogus=1
rejected "an unknown key under metrics.serviceMonitor" \
  "at '/metrics/serviceMonitor': additional properties 'bogus' not allowed" \
  --set metrics.serviceMonitor.bogus=1
rejected "an unknown key in a toleration" "at '/tolerations/0': additional properties 'bogus'" \
  --set 'tolerations[0].bogus=1'
rejected "a string replicaCount" "at '/replicaCount': got string, want integer" --set replicaCount=two
rejected "a string crds.enabled" "at '/crds/enabled': got string, want boolean" --set crds.enabled=yes
rejected "an unknown logLevel" "at '/logLevel': value must be one of" --set logLevel=verbose
rejected "an unknown logFormat" "at '/logFormat': value must be one of" --set logFormat=xml
rejected "a number as a duration" "at '/leaderElection/leaseDuration': got number, want string" \
  --set leaderElection.leaseDuration=15
rejected "a malformed duration" "at '/leaderElection/retryPeriod'" \
  --set leaderElection.retryPeriod=2seconds
rejected "an out-of-range router.port" "at '/router/port': maximum" --set router.port=99999
rejected "a number as a pod label" "at '/podLabels/team': got number, want string" \
  --set podLabels.team=1
rejected "an unknown key under metrics.prometheusRule" \
  "at '/metrics/prometheusRule': additional properties 'bogus' not allowed" \
  --set metrics.prometheusRule.bogus=1
rejected "a disabled alert that is not kiln's" "'TargetDown' does not match pattern" \
  --set metrics.prometheusRule.disabled.TargetDown=true
rejected "a number as the dashboard's label value" \
  "at '/metrics/grafanaDashboard/labelValue': got number, want string" \
  --set metrics.grafanaDashboard.labelValue=1
rejected "an unknown key under operator" "at '/operator': additional properties 'bogus' not allowed" \
  --set operator.bogus=1
rejected "a string operator.enabled" "at '/operator/enabled': got string, want boolean" \
  --set operator.enabled=no
rejected "a hub Secret name that is not a Kubernetes name" "at '/router/hubKubeconfigSecret'" \
  --set router.hubKubeconfigSecret=Hub_Config
rejected "an empty hub kubeconfig key" "at '/router/hubKubeconfigKey'" \
  --set router.hubKubeconfigKey=

# The operator's rights are never bound to the namespace's "default" ServiceAccount.
if out="$("$HELM" template "$RELEASE" "$CHART" --set serviceAccount.create=false 2>&1)"; then
  fail "serviceAccount.create=false without a name is refused" "helm template accepted it"
elif grep -qF "serviceAccount.name must name an existing ServiceAccount" <<<"$out"; then
  ok "serviceAccount.create=false without a name is refused"
else
  fail "serviceAccount.create=false without a name is refused" "$out"
fi
if render "$SCRATCH/own-sa.yaml" --set serviceAccount.create=false --set serviceAccount.name=ops &&
  [ "$(count_kind "$SCRATCH/own-sa.yaml" ServiceAccount)" = 0 ] &&
  grep -q 'serviceAccountName: ops$' "$SCRATCH/own-sa.yaml"; then
  ok "serviceAccount.create=false runs as the named ServiceAccount"
else
  fail "serviceAccount.create=false runs as the named ServiceAccount" "$(cat "$SCRATCH/own-sa.yaml")"
fi

finish "helm chart"
