// FailureClassifier: why a TrainingJob's worker stopped, as one reason the
// failure policy, the restart history and the quarantine act on. Pure: it
// reads what the controller observed (the pod's status, its node, its member
// cluster) and touches nothing.
//
// Evidence is weighed from the outside in: a member cluster that cannot be
// reached explains everything on it; a node that is gone, NotReady or Unknown
// explains its pods; the scheduler or the kubelet taking the pod away
// (DisruptionTarget, Evicted) is a preemption; the kernel's OOM killer is
// OOMKilled; only then does the worker's own exit code (worker/exit_codes.h)
// and its JSON termination message speak.
#ifndef KILN_OPERATOR_CONTROLLERS_TRAININGJOB_FAILURE_CLASSIFIER_H_
#define KILN_OPERATOR_CONTROLLERS_TRAININGJOB_FAILURE_CLASSIFIER_H_

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace kiln::trainingjob {

// The API's reasons (restartHistory[].reason, failurePolicy.rules[].onReasons)
// plus the two the exit-code contract makes terminal.
enum class FailureReason {
  kGPUFault,            // The worker found its GPU broken (exit 3 naming the GPU).
  kNodeFailure,         // The node is gone, NotReady or Unknown, or exit 3 otherwise.
  kClusterUnavailable,  // The member cluster stopped answering.
  kPreempted,           // The scheduler or the kubelet took the pod away.
  kOOMKilled,           // The container outgrew its memory limit.
  kCollectiveTimeout,   // A peer or a collective did not answer (exit 4).
  kLossDiverged,        // NaN/Inf or a spike in the loss (exit 5).
  kWorkerError,         // Anything else: exit 1, a signal, a deleted pod.
  kConfigurationError,  // Exit 2: the same settings cannot succeed.
  kDataError,           // Exit 6: the training data is missing or malformed.
  kSuperseded,          // Exit 8: another job (or a newer attempt) holds the checkpoints.
};

// As the API spells it, e.g. "GPUFault".
const char* FailureReasonName(FailureReason reason);
// The reason named `name`, if any.
std::optional<FailureReason> FailureReasonFromName(const std::string& name);

enum class NodeHealth { kReady, kNotReady, kUnknown, kGone };

// What the controller observed about one worker that stopped running.
struct WorkerFailure {
  std::string cluster;
  std::string node;
  std::string pod;
  // The container's exit code, when it ran and exited.
  std::optional<int32_t> exit_code;
  // state.terminated.reason: "OOMKilled", "Error", "ContainerCannotRun", ...
  std::string container_reason;
  // state.terminated.message: the worker writes JSON (exitCode, reason,
  // message, lastStep); anything else is kept as text.
  std::string termination_message;
  // status.reason: "Evicted", "Preempting", "NodeLost", ...
  std::string pod_reason;
  // The DisruptionTarget condition's reason when it is True:
  // "PreemptionByScheduler", "DeletionByTaintManager",
  // "EvictionByEvictionAPI", "TerminationByKubelet", ...
  std::string disruption_reason;
  NodeHealth node_health = NodeHealth::kReady;
  bool cluster_reachable = true;
  // The pod disappeared without a recorded exit (deleted by someone).
  bool pod_gone = false;
};

struct FailureClassification {
  FailureReason reason = FailureReason::kWorkerError;
  // Worth running again (possibly elsewhere): every reason but
  // ConfigurationError and DataError.
  bool retryable = true;
  // A fault of the machine: counts toward failurePolicy.nodeQuarantine.
  bool node_fault = false;
  // Resume from the checkpoint before the last one (the newest may already
  // hold the diverged state): LossDiverged.
  bool resume_before_last_checkpoint = false;
  // For restartHistory[].message and Events: what the evidence said.
  std::string message;
  // lastStep from the worker's termination message, when it wrote one.
  std::optional<int64_t> last_step;
};

FailureClassification Classify(const WorkerFailure& failure);

// The failure fields of a core/v1 Pod (its first container named `container`,
// or the first container when empty; when that never terminated, an init
// container that exited non-zero): exit code, reasons, termination message,
// DisruptionTarget. Cluster, node health and reachability are the
// caller's to fill. Nullopt while the container has not terminated and the
// pod shows no disruption (nothing to classify yet).
std::optional<WorkerFailure> WorkerFailureFromPod(const nlohmann::json& pod,
                                                  const std::string& container = "");

}  // namespace kiln::trainingjob

#endif  // KILN_OPERATOR_CONTROLLERS_TRAININGJOB_FAILURE_CLASSIFIER_H_
