#include "operator/controllers/trainingjob/failure_classifier.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <utility>

#include "worker/exit_codes.h"

namespace kiln::trainingjob {
namespace {

using nlohmann::json;

constexpr std::array<std::pair<FailureReason, const char*>, 11> kNames = {{
    {FailureReason::kGPUFault, "GPUFault"},
    {FailureReason::kNodeFailure, "NodeFailure"},
    {FailureReason::kClusterUnavailable, "ClusterUnavailable"},
    {FailureReason::kPreempted, "Preempted"},
    {FailureReason::kOOMKilled, "OOMKilled"},
    {FailureReason::kCollectiveTimeout, "CollectiveTimeout"},
    {FailureReason::kLossDiverged, "LossDiverged"},
    {FailureReason::kWorkerError, "WorkerError"},
    {FailureReason::kConfigurationError, "ConfigurationError"},
    {FailureReason::kDataError, "DataError"},
    {FailureReason::kSuperseded, "Superseded"},
}};

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Whether an infrastructure fault's message points at the GPU rather than at
// storage or the network: the worker's device probe, CUDA errors, Xid and
// ECC reports from the driver.
bool NamesGpu(const std::string& message) {
  const std::string m = Lower(message);
  for (const char* word : {"gpu", "cuda", "xid", "ecc", "nvlink", "device probe"}) {
    if (m.find(word) != std::string::npos) return true;
  }
  return false;
}

struct Termination {
  std::string message;
  std::optional<int64_t> last_step;
};

// The worker's JSON termination message, or the text as it is.
Termination ReadTermination(const std::string& text) {
  Termination t{text, std::nullopt};
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return t;
  if (j.contains("message") && j["message"].is_string()) t.message = j["message"];
  if (j.contains("lastStep") && j["lastStep"].is_number_integer()) {
    t.last_step = j["lastStep"].get<int64_t>();
  }
  return t;
}

std::string Where(const WorkerFailure& f) {
  std::string where = f.pod.empty() ? "worker" : "pod " + f.pod;
  if (!f.node.empty()) where += " on node " + f.node;
  if (!f.cluster.empty()) where += " in cluster " + f.cluster;
  return where;
}

const char* NodeHealthText(NodeHealth h) {
  switch (h) {
    case NodeHealth::kReady:
      return "Ready";
    case NodeHealth::kNotReady:
      return "NotReady";
    case NodeHealth::kUnknown:
      return "Unknown (its kubelet stopped reporting)";
    case NodeHealth::kGone:
      return "deleted";
  }
  return "?";
}

FailureClassification Make(FailureReason reason, std::string message) {
  FailureClassification c;
  c.reason = reason;
  c.message = std::move(message);
  c.retryable = reason != FailureReason::kConfigurationError &&
                reason != FailureReason::kDataError && reason != FailureReason::kSuperseded;
  c.node_fault = reason == FailureReason::kGPUFault || reason == FailureReason::kNodeFailure;
  c.resume_before_last_checkpoint = reason == FailureReason::kLossDiverged;
  return c;
}

}  // namespace

const char* FailureReasonName(FailureReason reason) {
  for (const auto& [r, name] : kNames) {
    if (r == reason) return name;
  }
  return "WorkerError";
}

std::optional<FailureReason> FailureReasonFromName(const std::string& name) {
  for (const auto& [r, n] : kNames) {
    if (name == n) return r;
  }
  return std::nullopt;
}

FailureClassification Classify(const WorkerFailure& f) {
  const std::string where = Where(f);
  const Termination term = ReadTermination(f.termination_message);
  auto with_step = [&](FailureClassification c) {
    c.last_step = term.last_step;
    return c;
  };
  if (!f.cluster_reachable) {
    return with_step(Make(FailureReason::kClusterUnavailable,
                          "member cluster " + f.cluster + " is unreachable (" + where + ")"));
  }
  if (f.node_health != NodeHealth::kReady) {
    return with_step(
        Make(FailureReason::kNodeFailure,
             "node " + f.node + " is " + NodeHealthText(f.node_health) + " (" + where + ")"));
  }
  // The taint manager deletes pods from an unreachable or not-ready node.
  if (f.disruption_reason == "DeletionByTaintManager" || f.pod_reason == "NodeLost") {
    return with_step(Make(FailureReason::kNodeFailure,
                          where + " was removed from its failing node (" +
                              (f.disruption_reason.empty() ? f.pod_reason : f.disruption_reason) +
                              ")"));
  }
  if (!f.disruption_reason.empty() || f.pod_reason == "Evicted" || f.pod_reason == "Preempting") {
    const std::string why = !f.disruption_reason.empty() ? f.disruption_reason : f.pod_reason;
    return with_step(Make(FailureReason::kPreempted, where + " was taken away: " + why));
  }
  if (f.container_reason == "OOMKilled") {
    return with_step(Make(FailureReason::kOOMKilled, where + " ran out of memory (OOMKilled)"));
  }
  if (!f.exit_code) {
    return with_step(Make(
        FailureReason::kWorkerError,
        where + (f.pod_gone ? " was deleted before it exited" : " stopped without an exit code")));
  }
  const int32_t code = *f.exit_code;
  std::string detail = "exit code " + std::to_string(code);
  if (!term.message.empty()) detail += ": " + term.message;
  using worker::ExitCode;
  switch (static_cast<ExitCode>(code)) {
    case ExitCode::kConfigurationError:
      return with_step(Make(FailureReason::kConfigurationError, where + " " + detail));
    case ExitCode::kDataError:
      return with_step(Make(FailureReason::kDataError, where + " " + detail));
    case ExitCode::kInfrastructureFault:
      return with_step(
          Make(NamesGpu(term.message) ? FailureReason::kGPUFault : FailureReason::kNodeFailure,
               where + " " + detail));
    case ExitCode::kCommunicationTimeout:
      return with_step(Make(FailureReason::kCollectiveTimeout, where + " " + detail));
    case ExitCode::kNumericsFault:
      return with_step(Make(FailureReason::kLossDiverged, where + " " + detail));
    case ExitCode::kSuperseded:
      return with_step(Make(FailureReason::kSuperseded, where + " " + detail));
    default:
      break;
  }
  if (code > 128 && code < 160) detail += " (signal " + std::to_string(code - 128) + ")";
  return with_step(Make(FailureReason::kWorkerError, where + " " + detail));
}

std::optional<WorkerFailure> WorkerFailureFromPod(const json& pod, const std::string& container) {
  WorkerFailure f;
  const json meta = pod.value("metadata", json::object());
  const json spec = pod.value("spec", json::object());
  const json status = pod.value("status", json::object());
  f.pod = meta.value("name", "");
  f.node = spec.value("nodeName", "");
  f.pod_reason = status.value("reason", "");
  for (const auto& c : status.value("conditions", json::array())) {
    if (c.value("type", "") == "DisruptionTarget" && c.value("status", "") == "True") {
      f.disruption_reason = c.value("reason", "DisruptionTarget");
    }
  }
  bool terminated = false;
  for (const auto& cs : status.value("containerStatuses", json::array())) {
    if (!container.empty() && cs.value("name", "") != container) continue;
    const json state = cs.value("state", json::object());
    const json last = cs.value("lastState", json::object());
    // A restarted container's previous run holds the failure.
    const json* t = state.contains("terminated")  ? &state["terminated"]
                    : last.contains("terminated") ? &last["terminated"]
                                                  : nullptr;
    if (t != nullptr && t->is_object()) {
      terminated = true;
      if (t->contains("exitCode") && (*t)["exitCode"].is_number_integer()) {
        f.exit_code = (*t)["exitCode"].get<int32_t>();
      }
      f.container_reason = t->value("reason", "");
      f.termination_message = t->value("message", "");
    }
    break;
  }
  if (!terminated) {
    // The container never ran because an init container (kiln-worker
    // prepare) failed: that exit holds the failure (e.g. 6, DataError).
    for (const auto& cs : status.value("initContainerStatuses", json::array())) {
      const json state = cs.value("state", json::object());
      const json t = state.value("terminated", json::object());
      if (!t.contains("exitCode") || !t["exitCode"].is_number_integer() ||
          t["exitCode"].get<int32_t>() == 0) {
        continue;
      }
      terminated = true;
      f.exit_code = t["exitCode"].get<int32_t>();
      f.container_reason = t.value("reason", "");
      f.termination_message = t.value("message", "");
      break;
    }
  }
  if (!terminated && f.disruption_reason.empty() && f.pod_reason.empty()) return std::nullopt;
  return f;
}

}  // namespace kiln::trainingjob
