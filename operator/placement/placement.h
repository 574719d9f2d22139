// The gang placement engine: pure functions from a Gang and a Snapshot to a
// Placement of the whole gang (a cluster and node per rank) or a Status saying
// why none exists. No I/O, no clock, no randomness: the same gang and fleet
// always give the same placement, whatever order the snapshot was filled in
// (every tie is broken by name). All or nothing: a Placement holds every
// worker or there is none. docs/placement.md has the rules and the reasons.
//
// Thread safety: the functions keep no state; Place reads its snapshot only,
// Reserve, Release and PlaceBatch mutate theirs (see snapshot.h).
#ifndef KILN_OPERATOR_PLACEMENT_PLACEMENT_H_
#define KILN_OPERATOR_PLACEMENT_PLACEMENT_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/statusor.h"
#include "operator/placement/gang.h"
#include "operator/placement/resources.h"
#include "operator/placement/snapshot.h"

namespace kiln::placement {

// Where one rank runs.
struct WorkerAssignment {
  std::string cluster;
  std::string node;
  // The value of the gang's topology key on that node ("" when it has none).
  std::string domain;

  bool operator==(const WorkerAssignment&) const = default;
};

// The workers on one cluster, in the shape of the TrainingJob's
// status.placement[] (ClusterPlacement).
struct ClusterShare {
  std::string cluster;
  int32_t workers = 0;
  std::vector<std::string> nodes;  // distinct, in rank order

  bool operator==(const ClusterShare&) const = default;
};

struct Placement {
  std::string gang;          // Gang::name
  int32_t replicas = 0;      // the size placed (elastic: the one chosen)
  Resources per_worker;      // what each worker holds on its node
  std::string topology_key;  // Gang::topology_key
  // One per rank, rank 0 first. Ranks on one node, then one domain, then one
  // cluster are consecutive, so ring collectives cross the slow links least.
  std::vector<WorkerAssignment> workers;
  // The domains used, "cluster/value", in rank order.
  std::vector<std::string> domains;
  // Per cluster, in rank order.
  std::vector<ClusterShare> clusters;

  bool operator==(const Placement&) const = default;
};

// Attached (Status::detail<PlacementFailure>()) to every error Place returns,
// so a controller can set a condition's reason without parsing the message.
struct PlacementFailure : StatusDetail {
  // CamelCase, for a condition's reason: InvalidGang, NoEligibleCluster,
  // NoEligibleNode or InsufficientCapacity.
  std::string reason;
  int64_t needed_workers = 0;
  // The most workers of this gang any allowed block (domain, cluster or the
  // fleet, as the gang requires) could take, and that block
  // ("cluster/domain", "cluster" or "fleet").
  int64_t largest_free_workers = 0;
  std::string largest_free_in;
};

// Places the whole gang on `snapshot`, or says why it cannot:
//   InvalidArgument    the gang itself is malformed (size < 1, min > max, ...);
//   ResourceExhausted  no room now: no eligible cluster or node, or not
//                      enough free capacity (retryable: capacity frees up).
// The message names the shortfall and the biggest free block, e.g. "needs 16
// GPUs (2 workers x 8) of NVIDIA-H100-80GB-HBM3 in one NVLink domain; largest
// free: 8 in kiln-2/kiln-2-nvl-3".
StatusOr<Placement> Place(const Gang& gang, const Snapshot& snapshot);

// The reservation key of a rank of a placed gang: "<holder>#<rank>", where
// the holder names the gang (its name, or one attempt of it: the fleet's
// capacity view uses the TrainingJob's UID and attempt). The capacity view
// adds a kiln worker pod under this key (from its job UID, attempt and rank
// labels) so the pod replaces the reservation Reserve made for it.
std::string WorkerPodKey(std::string_view holder, int32_t rank);

// Holds a placement's resources in `snapshot` (AddPod per rank, keyed by
// WorkerPodKey(holder, rank)). All or nothing: Aborted, with nothing held,
// when a node is gone, no longer takes work or has room, or its cluster was
// cordoned or lost (the placement was made on an older snapshot); NotFound
// when a cluster is gone. Ranks already held where the placement puts them
// need no new room, so a repeated Reserve is a no-op.
Status Reserve(const Placement& placement, std::string_view holder, Snapshot& snapshot);
// Drops what Reserve held under `holder`. Ok for ranks already gone.
Status Release(const Placement& placement, std::string_view holder, Snapshot& snapshot);
// The same, held under the gang's own name (placement.gang).
inline Status Reserve(const Placement& placement, Snapshot& snapshot) {
  return Reserve(placement, placement.gang, snapshot);
}
inline Status Release(const Placement& placement, Snapshot& snapshot) {
  return Release(placement, placement.gang, snapshot);
}

// One gang's outcome in a batch.
struct BatchDecision {
  std::string gang;
  StatusOr<Placement> placement;
};

// Places `gangs` one by one in batch order (priority high to low, then
// queue_order, then name), reserving each placement in `snapshot` before the
// next, so later gangs see earlier ones. A gang that does not fit is skipped
// and the rest still go (a smaller, later gang may use what a big one could
// not). Decisions come back in the order they were made.
std::vector<BatchDecision> PlaceBatch(std::span<const Gang> gangs, Snapshot& snapshot);

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_PLACEMENT_H_
