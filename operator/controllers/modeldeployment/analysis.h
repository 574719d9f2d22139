// The rollout analysis's verdicts: one measurement of one metric from the
// canary's and stable version's traffic window, and the judgement of an
// AnalysisRun from its measurements and spec.analysis's limits, the way
// Argo Rollouts counts them: a metric fails the run when its failed
// measurements exceed failureLimit; a run whose metric had more
// inconclusive measurements (no traffic to judge, the source unreachable)
// than inconclusiveLimit is Inconclusive, which pauses the rollout for a
// person to decide. Pure functions, thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ANALYSIS_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ANALYSIS_H_

#include <optional>
#include <string>
#include <vector>

#include "base/statusor.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/controllers/modeldeployment/metrics_source.h"

namespace kiln::modeldeployment {

// A measurement, and in words why it came out so ("errorRate 0.31 > max
// 0.05", "no requests to v2 in the last 30 s").
struct MeasuredValue {
  api::v1alpha1::Measurement measurement;
  std::string why;
};

// Measures router metric `metric` on version `canary` (minus `stable` with
// compareToStable) from `window`, at time `time` (RFC 3339): the canary's
// live requests, or with traffic Mirrored the copies mirrored to it (the
// stable version is always judged on its live requests; the words say
// "mirrored"). Inconclusive when the window could not be read or a version
// it needs had no such requests (and for a metric that is not a router one).
MeasuredValue Measure(const api::v1alpha1::AnalysisMetric& metric,
                      const StatusOr<TrafficWindow>& window, const std::string& canary,
                      const std::string& stable, const std::string& time);

// Measures Prometheus metric `metric` from its query's `value`
// (PrometheusSource::Query): Inconclusive when Prometheus could not be asked
// or had no number.
MeasuredValue MeasurePrometheus(const api::v1alpha1::AnalysisMetric& metric,
                                const StatusOr<std::optional<double>>& value,
                                const std::string& time);

struct AnalysisVerdict {
  std::string phase;  // Running, Failed or Inconclusive.
  std::string message;
};

// Judges the measurements so far against `spec` (failureLimit,
// inconclusiveLimit; defaults 0 and 3). A Failed verdict's message names the
// metric, its latest failing value and the bound it broke.
AnalysisVerdict Judge(const std::vector<api::v1alpha1::Measurement>& measurements,
                      const api::v1alpha1::AnalysisSpec& spec);

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ANALYSIS_H_
