#include "operator/controllers/modeldeployment/analysis.h"

#include <cstdio>
#include <map>

namespace kiln::modeldeployment {
namespace {

namespace v1 = api::v1alpha1;

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

double Field(const TrafficFigures& w, const std::string& metric) {
  if (metric == "errorRate") return w.error_rate;
  if (metric == "latencyP50") return w.latency_p50;
  if (metric == "latencyP99") return w.latency_p99;
  return w.ttft_p99;  // timeToFirstToken; the schema allows nothing else.
}

bool JudgesMirrored(const v1::AnalysisMetric& metric) {
  return metric.router && metric.router->traffic.value_or("Live") == "Mirrored";
}

// "" when `value` is within the metric's bounds, else which bound it broke.
std::string Broken(const v1::AnalysisMetric& metric, double value) {
  if (metric.max && value > *metric.max) return "> max " + Num(*metric.max);
  if (metric.min && value < *metric.min) return "< min " + Num(*metric.min);
  return "";
}

}  // namespace

MeasuredValue Measure(const v1::AnalysisMetric& metric, const StatusOr<TrafficWindow>& window,
                      const std::string& canary, const std::string& stable,
                      const std::string& time) {
  MeasuredValue out;
  out.measurement.metric = metric.name;
  out.measurement.time = time;
  out.measurement.phase = "Inconclusive";
  if (!metric.router) {
    out.why = metric.name + ": not a router metric";
    return out;
  }
  if (!window.ok()) {
    out.why = metric.name + ": cannot read the router's window: " + window.status().message();
    return out;
  }
  const std::string& name = metric.router->metric;
  const bool mirrored = JudgesMirrored(metric);
  auto c = window->find(canary);
  const TrafficFigures judged = c == window->end() ? TrafficFigures{}
                                : mirrored         ? c->second.mirrored
                                                   : c->second.live();
  if (judged.requests == 0) {
    out.why = metric.name + ": no " + (mirrored ? "mirrored " : "") + "requests to " + canary +
              " in the window";
    return out;
  }
  double value = Field(judged, name);
  std::string what = name + " of " + canary + (mirrored ? " on mirrored requests" : "");
  if (metric.router->compare_to_stable.value_or(false)) {
    auto s = window->find(stable);
    if (s == window->end() || s->second.requests == 0) {
      out.why = metric.name + ": no requests to the stable version " + stable + " to compare with";
      return out;
    }
    value -= Field(s->second.live(), name);
    what += " minus " + stable + (mirrored ? " on live requests" : "");
  }
  out.measurement.value = value;
  const std::string broken = Broken(metric, value);
  out.measurement.phase = broken.empty() ? "Successful" : "Failed";
  out.why = metric.name + ": " + what + " = " + Num(value) + (broken.empty() ? "" : " " + broken);
  return out;
}

MeasuredValue MeasurePrometheus(const v1::AnalysisMetric& metric,
                                const StatusOr<std::optional<double>>& value,
                                const std::string& time) {
  MeasuredValue out;
  out.measurement.metric = metric.name;
  out.measurement.time = time;
  out.measurement.phase = "Inconclusive";
  if (!value.ok()) {
    out.why = metric.name + ": " + value.status().message();
    return out;
  }
  if (!value->has_value()) {
    out.why = metric.name + ": the query returned no number";
    return out;
  }
  const double v = **value;
  out.measurement.value = v;
  const std::string broken = Broken(metric, v);
  out.measurement.phase = broken.empty() ? "Successful" : "Failed";
  out.why = metric.name + " = " + Num(v) + (broken.empty() ? "" : " " + broken);
  return out;
}

AnalysisVerdict Judge(const std::vector<v1::Measurement>& measurements,
                      const v1::AnalysisSpec& spec) {
  const int failure_limit = spec.failure_limit.value_or(0);
  const int inconclusive_limit = spec.inconclusive_limit.value_or(3);
  // Pointers into the spec itself: value_or's copy would be gone after the
  // loop (ThreadSanitizer found the read after free).
  std::map<std::string, const v1::AnalysisMetric*> metrics;
  if (spec.metrics) {
    for (const auto& m : *spec.metrics) metrics[m.name] = &m;
  }
  std::map<std::string, int> failed, inconclusive;
  std::map<std::string, const v1::Measurement*> last_failed;
  for (const auto& m : measurements) {
    if (m.phase == "Failed") {
      ++failed[m.metric];
      last_failed[m.metric] = &m;
    } else if (m.phase == "Inconclusive") {
      ++inconclusive[m.metric];
    }
  }
  for (const auto& [name, count] : failed) {
    if (count <= failure_limit) continue;
    const v1::Measurement& m = *last_failed[name];
    std::string detail = name;
    if (m.value) {
      detail += " = " + Num(*m.value);
      auto it = metrics.find(name);
      if (it != metrics.end()) {
        const std::string broken = Broken(*it->second, *m.value);
        if (!broken.empty()) detail += " " + broken;
        const bool compared =
            it->second->router && it->second->router->compare_to_stable.value_or(false);
        if (JudgesMirrored(*it->second)) {
          detail += compared ? " (canary's mirrored requests minus stable's live ones)"
                             : " (canary's mirrored requests)";
        } else if (compared) {
          detail += " (canary minus stable)";
        }
      }
    }
    return {"Failed", detail + "; " + std::to_string(count) + " failed measurement" +
                          (count == 1 ? "" : "s") + ", failureLimit " +
                          std::to_string(failure_limit)};
  }
  for (const auto& [name, count] : inconclusive) {
    if (count <= inconclusive_limit) continue;
    return {"Inconclusive", name + ": " + std::to_string(count) +
                                " measurements without data (no traffic, or the source did not "
                                "answer), inconclusiveLimit " +
                                std::to_string(inconclusive_limit)};
  }
  return {"Running", ""};
}

}  // namespace kiln::modeldeployment
