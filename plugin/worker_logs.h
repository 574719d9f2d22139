// WorkerLogs: finds a TrainingJob rank's worker pod — in the hub (the
// cluster holding the job) first, then in the member cluster its placement
// names, reached through the MemberCluster (spec.local: the hub itself;
// otherwise the kubeconfig in its Secret, if the user may read it) — and
// reads or follows the worker container's log. Pods are found by the labels
// the TrainingJob controller puts on them (operator/controllers/trainingjob/
// worker_pods.h), newest attempt first. Errors are sentences for the user,
// saying what is missing. Thread-compatible.
#ifndef KILN_PLUGIN_WORKER_LOGS_H_
#define KILN_PLUGIN_WORKER_LOGS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/statusor.h"
#include "kube/client.h"

namespace kiln::plugin {

// A rank's pod and the client of the cluster it is in.
struct WorkerPod {
  std::string cluster;  // The member cluster's name; empty for the hub.
  std::string ns, name;
  std::unique_ptr<kube::Client> member;  // Null when the pod is in the hub.
};

// Finds `rank`'s newest pod of TrainingJob `job` (as read from `hub`).
StatusOr<WorkerPod> FindWorkerPod(kube::Client& hub, const kube::json& job, int32_t rank);

struct LogOptions {
  bool follow = false;
  std::optional<int64_t> tail_lines;
};

// Writes the worker container's log to `write` as it arrives; with follow,
// until the container ends or `*cancel` is set.
Status ReadWorkerLog(kube::Client& client, const WorkerPod& pod, const LogOptions& options,
                     const std::function<void(std::string_view)>& write,
                     const std::atomic<bool>* cancel);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_WORKER_LOGS_H_
