// Why a serving pod is not ready, in words for a ModelDeployment's status:
// the worker's own reason when it exited (kiln-worker writes why it could not
// load the model as its termination message), the kubelet's when it cannot
// start the container, the scheduler's when it cannot place the pod. Pure,
// thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_POD_TROUBLE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_POD_TROUBLE_H_

#include <string>

#include <nlohmann/json.hpp>

namespace kiln::modeldeployment {

// "" for a pod that is ready or starting normally; otherwise e.g.
// "chat-v2-7f9c-x2x: CrashLoopBackOff, last exit 6: cannot open /models/v2".
std::string PodTrouble(const nlohmann::json& pod);

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_POD_TROUBLE_H_
