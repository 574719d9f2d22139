// Why a serving pod is not ready, in words for a ModelDeployment's status:
// the worker's own reason when it exited (kiln-worker writes why it could not
// load the model as its termination message), the kubelet's when it cannot
// start the container (or, while it starts, its Warning Events), the
// scheduler's when it cannot place the pod. Pure, thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_POD_TROUBLE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_POD_TROUBLE_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kiln::modeldeployment {

// "" for a pod that is ready or starting normally; otherwise e.g.
// "chat-v2-7f9c-x2x: CrashLoopBackOff, last exit 6: cannot open /models/v2".
std::string PodTrouble(const nlohmann::json& pod);

// Whether `pod` is still being started: not yet running its serving
// container (Pending, or waiting in ContainerCreating or PodInitializing),
// where what holds it up (a volume that cannot be mounted, a sandbox that
// cannot be made) is only in the kubelet's Events.
bool PodStarting(const nlohmann::json& pod);

// For a starting pod, the newest Warning of `events` (v1 Events, any order)
// about it (by UID, else name), e.g. "chat-v2-7f9c-x2x: FailedMount:
// MountVolume.SetUp failed for volume \"shared\" : hostPath type check
// failed: /models is not a directory"; "" when none.
std::string PodEventTrouble(const nlohmann::json& pod, const std::vector<nlohmann::json>& events);

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_POD_TROUBLE_H_
