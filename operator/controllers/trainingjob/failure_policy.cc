#include "operator/controllers/trainingjob/failure_policy.h"

#include <algorithm>
#include <functional>
#include <map>
#include <utility>

#include "base/duration.h"
#include "base/time_format.h"

namespace kiln::trainingjob {
namespace {

namespace v1 = api::v1alpha1;
using std::chrono::milliseconds;

std::optional<FailureAction> ActionFromName(const std::string& name) {
  if (name == "Restart") return FailureAction::kRestart;
  if (name == "Fail") return FailureAction::kFail;
  if (name == "Ignore") return FailureAction::kIgnore;
  return std::nullopt;
}

bool Matches(const v1::FailureRule& rule, const FailureClassification& failure,
             std::optional<int32_t> exit_code) {
  if (rule.on_exit_codes) {
    if (!exit_code) return false;  // Nothing exited: no exit-code rule speaks.
    const auto& values = rule.on_exit_codes->values;
    const bool in = std::find(values.begin(), values.end(), *exit_code) != values.end();
    return rule.on_exit_codes->operator_ == "NotIn" ? !in : in;
  }
  if (rule.on_reasons) {
    const std::string name = FailureReasonName(failure.reason);
    const auto& reasons = *rule.on_reasons;
    return std::find(reasons.begin(), reasons.end(), name) != reasons.end();
  }
  return false;
}

// `text` as a duration, or `fallback` when unset or unreadable (the CRD's
// schema validates durations, so an unreadable one is an old object).
milliseconds DurationOr(const std::optional<std::string>& text, milliseconds fallback) {
  if (!text) return fallback;
  auto d = ParseDuration(*text);
  if (!d.ok()) return fallback;
  return std::chrono::duration_cast<milliseconds>(*d);
}

}  // namespace

const char* FailureActionName(FailureAction action) {
  switch (action) {
    case FailureAction::kRestart:
      return "Restart";
    case FailureAction::kFail:
      return "Fail";
    case FailureAction::kIgnore:
      return "Ignore";
  }
  return "Restart";
}

FailureDecision Decide(const FailureClassification& failure, std::optional<int32_t> exit_code,
                       const std::optional<v1::FailurePolicy>& policy, int32_t restarts) {
  const std::string reason = FailureReasonName(failure.reason);
  FailureDecision d;
  bool matched = false;
  if (policy && policy->rules) {
    for (size_t i = 0; i < policy->rules->size(); ++i) {
      const v1::FailureRule& rule = (*policy->rules)[i];
      if (!Matches(rule, failure, exit_code)) continue;
      auto action = ActionFromName(rule.action);
      if (!action) continue;  // Not in the schema's enum: an old object; skip it.
      d.action = *action;
      d.why = "failurePolicy.rules[" + std::to_string(i) + "] (" + rule.action + ") matched " +
              reason + (exit_code ? ", exit code " + std::to_string(*exit_code) : "");
      matched = true;
      break;
    }
  }
  if (!matched) {
    d.action = failure.retryable ? FailureAction::kRestart : FailureAction::kFail;
    d.why = failure.retryable ? reason + " is retryable"
                              : reason + " cannot succeed by running the same job again";
  }
  if (d.action == FailureAction::kRestart) {
    const int32_t max =
        policy && policy->max_restarts ? *policy->max_restarts : kDefaultMaxRestarts;
    if (restarts >= max) {
      d.action = FailureAction::kFail;
      d.why += "; but the job has restarted " + std::to_string(restarts) + " times (maxRestarts " +
               std::to_string(max) + ")";
    }
  }
  return d;
}

milliseconds RestartDelay(const std::optional<v1::FailurePolicy>& policy, int32_t restarts) {
  const auto& backoff = policy ? policy->backoff : std::optional<v1::Backoff>();
  const milliseconds initial =
      DurationOr(backoff ? backoff->initial : std::nullopt, kDefaultBackoffInitial);
  const milliseconds max = DurationOr(backoff ? backoff->max : std::nullopt, kDefaultBackoffMax);
  milliseconds delay = initial;
  for (int32_t i = 0; i < restarts && delay < max; ++i) delay *= 2;
  return std::min(delay, max);
}

bool BacksOff(FailureReason reason) { return reason != FailureReason::kClusterUnavailable; }

std::vector<NodeFault> NodeFaults(const std::vector<v1::RestartRecord>& history) {
  std::vector<NodeFault> out;
  for (const auto& r : history) {
    auto reason = FailureReasonFromName(r.reason);
    if (!reason ||
        (*reason != FailureReason::kGPUFault && *reason != FailureReason::kNodeFailure)) {
      continue;
    }
    if (!r.node || r.node->empty()) continue;
    auto time = ParseRfc3339(r.time);
    if (!time.ok()) continue;
    out.push_back({r.cluster.value_or(""), *r.node,
                   std::chrono::time_point_cast<std::chrono::system_clock::duration>(*time)});
  }
  return out;
}

namespace {

// nodeQuarantine's threshold (0: disabled) and window.
std::pair<int32_t, milliseconds> QuarantineRule(const std::optional<v1::FailurePolicy>& policy) {
  const auto& q = policy ? policy->node_quarantine : std::optional<v1::NodeQuarantine>();
  return {q && q->faults ? *q->faults : kDefaultQuarantineFaults,
          DurationOr(q ? q->window : std::nullopt, kDefaultQuarantineWindow)};
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> QuarantineEnds(
    const std::vector<NodeFault>& faults, const std::optional<v1::FailurePolicy>& policy,
    const NodeKey& node, std::chrono::system_clock::time_point now) {
  const auto [threshold, window] = QuarantineRule(policy);
  if (threshold <= 0) return std::nullopt;
  std::vector<std::chrono::system_clock::time_point> times;
  for (const auto& f : faults) {
    if (f.cluster == node.cluster && f.node == node.node && now - f.time <= window) {
      times.push_back(f.time);
    }
  }
  if (static_cast<int32_t>(times.size()) < threshold) return std::nullopt;
  std::sort(times.begin(), times.end(), std::greater<>());
  return times[static_cast<size_t>(threshold - 1)] + window;
}

std::vector<NodeKey> NodesToQuarantine(const std::vector<NodeFault>& faults,
                                       const std::optional<v1::FailurePolicy>& policy,
                                       std::chrono::system_clock::time_point now) {
  const auto [threshold, window] = QuarantineRule(policy);
  if (threshold <= 0) return {};
  std::map<NodeKey, int32_t> counts;
  for (const auto& f : faults) {
    if (now - f.time > window) continue;  // A little in the future (skew) still counts.
    ++counts[{f.cluster, f.node}];
  }
  std::vector<NodeKey> out;
  for (const auto& [key, n] : counts) {
    if (n >= threshold) out.push_back(key);
  }
  return out;
}

}  // namespace kiln::trainingjob
