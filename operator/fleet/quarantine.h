// Quarantine: the kiln.dev/quarantined:NoSchedule taint kiln puts on a member
// cluster's node after repeated hardware faults there (a TrainingJob's
// failurePolicy.nodeQuarantine), and takes off when the quarantine ends.
// The taint's value is that end, in Unix seconds (a valid label value), so
// anyone reading the node can tell whether it still holds: the TrainingJob
// controller sets it, the MemberCluster controller lifts it once past, and a
// person can lift it early with
//   kubectl taint nodes NODE kiln.dev/quarantined:NoSchedule-
// A quarantine taint without a numeric value (put on by hand) never ends by
// itself. Placement skips quarantined nodes (placement/snapshot.h), and so
// does each member's kube-scheduler (NoSchedule). Stateless; thread-safe.
#ifndef KILN_OPERATOR_FLEET_QUARANTINE_H_
#define KILN_OPERATOR_FLEET_QUARANTINE_H_

#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "kube/client.h"

namespace kiln::fleet {

// The node's spec.taints with the quarantine holding until at least `until`
// (a later end already there stays); nullopt when they already say so.
std::optional<nlohmann::json> TaintsWithQuarantine(const nlohmann::json& node,
                                                   std::chrono::system_clock::time_point until);

// The node's spec.taints without a quarantine that ended before `now`;
// nullopt when there is none to lift.
std::optional<nlohmann::json> TaintsWithoutEndedQuarantine(
    const nlohmann::json& node, std::chrono::system_clock::time_point now);

// Taints `node` in the cluster `client` talks to (a merge patch of
// spec.taints under the node's resourceVersion, read afresh; a conflict is
// tried again a few times). NotFound when the node is gone.
Status QuarantineNode(kube::Client& client, const std::string& node,
                      std::chrono::system_clock::time_point until);

// Lifts an ended quarantine from `node` (an object as last seen, e.g. from
// the informer's cache); true when it did. A stale object fails with a
// Conflict, to be tried again on the next pass.
StatusOr<bool> LiftEndedQuarantine(kube::Client& client, const nlohmann::json& node,
                                   std::chrono::system_clock::time_point now);

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_QUARANTINE_H_
