// How the fleet reads member clusters' Nodes and Pods into placement's terms:
// a Node's labels, taints, allocatable resources and whether it takes work; a
// Pod's node and the resources it requests. Stateless functions; thread-safe.
#ifndef KILN_OPERATOR_FLEET_NODE_AND_POD_H_
#define KILN_OPERATOR_FLEET_NODE_AND_POD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "operator/api/labels.h"
#include "operator/placement/resources.h"
#include "operator/placement/snapshot.h"

namespace kiln::fleet {

// The label kiln puts on the pods it creates in member clusters; the pod
// informers count every non-terminal pod's GPUs, and track these as kiln's.
using api::kManagedByLabel;
using api::kManagedByValue;
inline constexpr const char* kGpuResource = "nvidia.com/gpu";

// A Node object as placement sees it. schedulable is false when
// spec.unschedulable is set or the Ready condition is not True; quarantined
// when it carries the kiln.dev/quarantined taint. InvalidArgument for an
// allocatable amount that is not a quantity.
StatusOr<placement::NodeInfo> NodeInfoFromObject(const nlohmann::json& node);

// The status of a Node's Ready condition: "True", "False" or "Unknown";
// empty when it has none (a node not reported on yet).
std::string NodeReadyStatus(const nlohmann::json& node);

// What a Pod asks for: the sum over its containers of requests (limits when
// a request is absent, as the API server defaults them), or the largest
// init container's when that is more.
StatusOr<placement::Resources> PodRequests(const nlohmann::json& pod);

// True for Succeeded and Failed pods, which hold nothing.
bool PodTerminated(const nlohmann::json& pod);

// A Node or a Pod cut down to the fields the fleet's readers use — the
// functions above, the quarantine's taint patch, the TrainingJob
// controller's node health (the Ready condition) and its pod listener
// (labels, namespace) — for the member informers' caches: a watched node
// keeps its metadata's identity and labels, its taints and unschedulable,
// its allocatable, capacity and conditions (without the heartbeat time);
// a watched pod its identity and labels, its node, scheduling gates,
// containers' names and resources, overhead, and phase. Images, volumes,
// env, annotations and the rest, most of a real object, go.
nlohmann::json NodeAsWatched(nlohmann::json node);
nlohmann::json PodAsWatched(nlohmann::json pod);

// The holder of one attempt of a TrainingJob's gang in the capacity view:
// "<job UID>@<attempt>". The UID, not the name, so a job deleted and made
// again under its name is another holder, and the attempt, so the pods of an
// earlier attempt (still being deleted) are never taken for this one's.
std::string AttemptHolder(std::string_view job_uid, int32_t attempt);

// A TrainingJob worker pod's place in its gang, from its labels.
struct WorkerRef {
  std::string holder;  // AttemptHolder of its job UID and attempt
  int32_t rank = 0;
};
// The worker a pod is (kiln's managed-by label, and a job UID, a numeric
// attempt and a numeric rank), or none for any other pod.
std::optional<WorkerRef> WorkerOfPod(const nlohmann::json& pod);

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_NODE_AND_POD_H_
