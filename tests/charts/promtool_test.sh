#!/usr/bin/env bash
# kiln's alerts and dashboard checked with Prometheus's own promtool (Debian's
# prometheus package), as the chart renders them (no cluster needed):
#   - the PrometheusRule renders only when enabled and the API is served; its
#     groups equal charts/kiln/files/prometheus-rules.yaml, the plain rules file;
#   - `promtool check rules` passes on the rendered rules and on the plain file;
#   - `promtool test rules` (tests/charts/prometheus_rules_test.yaml) fires
#     each alert and keeps it quiet where it should;
#   - every PromQL expression of the dashboard, as the chart renders it, parses
#     (`promtool check rules` on them as recording rules);
#   - every metric the rules and the dashboard use is one kiln registers;
#   - metrics.prometheusRule.disabled, .alertLabels, .namespace and
#     metrics.grafanaDashboard's label, value and namespace take effect.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/lib/common.sh"
HELM="$(kiln_tools_bin)/helm"
CHART="$ROOT/charts/kiln"
HERE="$ROOT/tests/charts"
RULES_FILE="$CHART/files/prometheus-rules.yaml"
CHECKS=(python3 "$HERE/monitoring_checks.py")
RULE_API=(--api-versions monitoring.coreos.com/v1/PrometheusRule)
ON=(--set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true)

[ -x "$HELM" ] || die "helm not found at $HELM" \
  "run scripts/setup.sh (KILN_CACHE_DIR=$KILN_CACHE_DIR)"
PROMTOOL="$(command -v promtool)" ||
  die "promtool not found" "apt-get install prometheus (scripts/setup.sh does)"
python3 -c 'import yaml' 2>/dev/null ||
  die "python3 cannot import yaml" "apt-get install python3-yaml (scripts/setup.sh does)"

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
export HELM_CONFIG_HOME="$SCRATCH/helm/config" HELM_CACHE_HOME="$SCRATCH/helm/cache" \
  HELM_DATA_HOME="$SCRATCH/helm/data"
source "$HERE/checks.sh"

# render OUT ARGS...: helm template the chart into OUT; false (output kept) on error.
render() {
  local out=$1
  shift
  "$HELM" template kiln "$CHART" --namespace kiln-system "$@" >"$out" 2>&1
}

# check NAME FILE COMMAND ARG...: monitoring_checks.py COMMAND on a render.
check() {
  local name=$1 file=$2 out
  shift 2
  if out="$("${CHECKS[@]}" "$@" <"$file" 2>&1)"; then ok "$name"; else fail "$name" "$out"; fi
}

# count_kind FILE KIND: how many documents of KIND a render holds.
count_kind() { grep -c "^kind: $2\$" "$1" || true; }

expect_ok "promtool check rules (the plain rules file)" "$PROMTOOL" check rules "$RULES_FILE"

if render "$SCRATCH/on.yaml" "${ON[@]}" "${RULE_API[@]}"; then
  check "the PrometheusRule's groups are the plain rules file's" "$SCRATCH/on.yaml" \
    same-rules "$RULES_FILE"
  check "the PrometheusRule's spec extracted" "$SCRATCH/on.yaml" rules "$SCRATCH/rules.yaml"
  expect_ok "promtool check rules (as the chart renders them)" \
    "$PROMTOOL" check rules "$SCRATCH/rules.yaml"
  cp "$HERE/prometheus_rules_test.yaml" "$SCRATCH/"
  expect_ok "promtool test rules: every alert fires and stays quiet as it should" \
    "$PROMTOOL" test rules "$SCRATCH/prometheus_rules_test.yaml"
  check "the dashboard ConfigMap extracted" "$SCRATCH/on.yaml" dashboard "$SCRATCH/kiln.json"
  expect_ok "the dashboard is files/grafana-dashboard.json verbatim" \
    cmp "$SCRATCH/kiln.json" "$CHART/files/grafana-dashboard.json"
  expect_ok "the dashboard is JSON with a uid and panels" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["uid"] == "kiln-overview" and len(d["panels"]) > 10, d.keys()' "$SCRATCH/kiln.json"
  expect_ok "the dashboard's expressions as recording rules" \
    "${CHECKS[@]}" dashboard-rules "$SCRATCH/kiln.json" "$SCRATCH/dashboard-rules.yaml"
  expect_ok "promtool check rules (every dashboard expression)" \
    "$PROMTOOL" check rules "$SCRATCH/dashboard-rules.yaml"
  expect_ok "every metric in the rules and the dashboard is one kiln exports" \
    "${CHECKS[@]}" metric-names "$SCRATCH/rules.yaml" "$SCRATCH/kiln.json"
  if grep -q '^    grafana_dashboard: "1"$' "$SCRATCH/on.yaml" &&
    [ "$(grep -c '^  namespace: kiln-system$' "$SCRATCH/on.yaml")" -ge 2 ]; then
    ok "dashboard ConfigMap labelled grafana_dashboard=\"1\" in the release namespace"
  else
    fail "dashboard ConfigMap labelled grafana_dashboard=\"1\" in the release namespace" \
      "$(cat "$SCRATCH/on.yaml")"
  fi
else
  fail "helm template (PrometheusRule and dashboard on)" "$(cat "$SCRATCH/on.yaml")"
fi

# Off by default; the PrometheusRule also needs the API (the dashboard does not).
render "$SCRATCH/default.yaml" "${RULE_API[@]}" || true
render "$SCRATCH/no-api.yaml" "${ON[@]}" || true
if [ "$(count_kind "$SCRATCH/default.yaml" PrometheusRule)" = 0 ] &&
  ! grep -q 'kiln.json' "$SCRATCH/default.yaml" &&
  [ "$(count_kind "$SCRATCH/no-api.yaml" PrometheusRule)" = 0 ] &&
  grep -q 'kiln.json' "$SCRATCH/no-api.yaml"; then
  ok "off by default; the PrometheusRule only where monitoring.coreos.com/v1 serves it"
else
  fail "off by default; the PrometheusRule only where monitoring.coreos.com/v1 serves it"
fi

# The values that shape them.
if render "$SCRATCH/tuned.yaml" "${ON[@]}" "${RULE_API[@]}" \
  --set metrics.prometheusRule.disabled.KilnRolloutPaused=true \
  --set metrics.prometheusRule.alertLabels.team=ml --set metrics.prometheusRule.namespace=monitoring \
  --set metrics.grafanaDashboard.label=dash --set-string metrics.grafanaDashboard.labelValue=kiln \
  --set metrics.grafanaDashboard.namespace=grafana &&
  "${CHECKS[@]}" rules "$SCRATCH/tuned-rules.yaml" <"$SCRATCH/tuned.yaml" >/dev/null; then
  if ! grep -q 'KilnRolloutPaused' "$SCRATCH/tuned-rules.yaml" &&
    grep -q 'alert: KilnRolloutDegraded' "$SCRATCH/tuned-rules.yaml" &&
    [ "$(grep -c '^ *team: ml$' "$SCRATCH/tuned-rules.yaml")" = \
      "$(grep -c '^ *- alert:' "$SCRATCH/tuned-rules.yaml")" ] &&
    [ "$(grep -c '^ *severity: ' "$SCRATCH/tuned-rules.yaml")" = \
      "$(grep -c '^ *- alert:' "$SCRATCH/tuned-rules.yaml")" ]; then
    ok "prometheusRule.disabled leaves an alert out; alertLabels reach every alert"
  else
    fail "prometheusRule.disabled leaves an alert out; alertLabels reach every alert" \
      "$(cat "$SCRATCH/tuned-rules.yaml")"
  fi
  if grep -q '^  namespace: monitoring$' "$SCRATCH/tuned.yaml" &&
    grep -q '^  namespace: grafana$' "$SCRATCH/tuned.yaml" &&
    grep -q '^    dash: "kiln"$' "$SCRATCH/tuned.yaml"; then
    ok "the PrometheusRule's and the dashboard's namespace and label follow the values"
  else
    fail "the PrometheusRule's and the dashboard's namespace and label follow the values" \
      "$(cat "$SCRATCH/tuned.yaml")"
  fi
  expect_ok "promtool check rules (with an alert disabled and labels added)" \
    "$PROMTOOL" check rules "$SCRATCH/tuned-rules.yaml"
else
  fail "helm template (tuned monitoring values)" "$(cat "$SCRATCH/tuned.yaml")"
fi

finish "prometheus rules and dashboard"
