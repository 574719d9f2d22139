// FailurePolicy: what a TrainingJob does about a classified worker failure
// (spec.failurePolicy): restart the gang, fail the job, or ignore the exit;
// how long to wait before a restart; which nodes to quarantine. Pure, so the
// controller's decisions are tested exhaustively apart from any I/O.
//
// Rules are checked in order and the first match decides. Without a match a
// retryable failure restarts the gang and a configuration or data error
// (exit codes 2 and 6: the same settings and data cannot succeed) fails the
// job; a rule can still choose Restart for those. A restart beyond
// maxRestarts fails the job instead, saying so.
#ifndef KILN_OPERATOR_CONTROLLERS_TRAININGJOB_FAILURE_POLICY_H_
#define KILN_OPERATOR_CONTROLLERS_TRAININGJOB_FAILURE_POLICY_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "operator/api/v1alpha1/trainingjob.h"
#include "operator/controllers/trainingjob/failure_classifier.h"

namespace kiln::trainingjob {

// The API's defaults (api/v1alpha1/trainingjob.yaml).
inline constexpr int32_t kDefaultMaxRestarts = 10;
inline constexpr std::chrono::seconds kDefaultBackoffInitial{10};
inline constexpr std::chrono::minutes kDefaultBackoffMax{5};
inline constexpr int32_t kDefaultQuarantineFaults = 2;
inline constexpr std::chrono::hours kDefaultQuarantineWindow{24};

enum class FailureAction { kRestart, kFail, kIgnore };
const char* FailureActionName(FailureAction action);

struct FailureDecision {
  FailureAction action = FailureAction::kRestart;
  // For the job's conditions and Events: which rule or default decided, and
  // why a restart became a failure.
  std::string why;
};

// `restarts`: the gang's restarts so far (status.restarts).
FailureDecision Decide(const FailureClassification& failure, std::optional<int32_t> exit_code,
                       const std::optional<api::v1alpha1::FailurePolicy>& policy, int32_t restarts);

// The wait before restart number `restarts + 1`: backoff.initial doubled per
// restart so far, at most backoff.max.
std::chrono::milliseconds RestartDelay(const std::optional<api::v1alpha1::FailurePolicy>& policy,
                                       int32_t restarts);

// Whether a restart for `reason` waits out the backoff first. A lost member
// cluster (ClusterUnavailable) does not: `spec.unreachableAfter` has already
// been waited out, the gang's new placement avoids the cluster, and nothing
// the gang did caused it. Every other reason does.
bool BacksOff(FailureReason reason);

// One fault on a node, as remembered in the job's restart history.
struct NodeFault {
  std::string cluster;
  std::string node;
  std::chrono::system_clock::time_point time;
};

// The node faults in a job's restart history (GPUFault and NodeFailure
// records naming a node); records with an unreadable time are skipped.
std::vector<NodeFault> NodeFaults(const std::vector<api::v1alpha1::RestartRecord>& history);

struct NodeKey {
  std::string cluster;
  std::string node;
  bool operator==(const NodeKey&) const = default;
  auto operator<=>(const NodeKey&) const = default;
};

// The nodes with at least nodeQuarantine.faults faults within its window
// before `now`, sorted; none when the policy sets faults to 0.
std::vector<NodeKey> NodesToQuarantine(const std::vector<NodeFault>& faults,
                                       const std::optional<api::v1alpha1::FailurePolicy>& policy,
                                       std::chrono::system_clock::time_point now);

// When the quarantine of `node` ends: once its nodeQuarantine.faults-th
// newest fault leaves the window. Nullopt when it is not quarantined at
// `now`.
std::optional<std::chrono::system_clock::time_point> QuarantineEnds(
    const std::vector<NodeFault>& faults, const std::optional<api::v1alpha1::FailurePolicy>& policy,
    const NodeKey& node, std::chrono::system_clock::time_point now);

}  // namespace kiln::trainingjob

#endif  // KILN_OPERATOR_CONTROLLERS_TRAININGJOB_FAILURE_POLICY_H_
