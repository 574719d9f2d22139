// CapacityView: the fleet's capacity as one placement::Snapshot, kept current
// from the member clusters' node and pod informers, and the per-cluster
// figures MemberCluster status reports. Placement takes a copy (Snapshot(),
// a few pointer copies per cluster) and reads it without locks; informer
// events mutate the master copy, cloning only what a held copy still shares.
//
// Every bound, non-terminal pod holds its requests on its node (kiln's or
// not: GPUs another workload holds are not free); unbound pods that ask for
// GPUs are counted as pending.
//
// Holds: a placement decision holds its workers' resources on their nodes
// from the moment it is made (PlaceAndHold), before any pod exists, so the
// next decision cannot count the same GPUs. A TrainingJob holds under one
// holder at a time, its current attempt (AttemptHolder: job UID and
// attempt), rank by rank under placement::WorkerPodKey. A worker pod is
// counted under the same key (WorkerOfPod, from its labels): once the
// informer shows it bound, the pod replaces its rank's hold (counted once)
// and the hold is spent; an unbound pod, or one deleted before it was bound,
// leaves the hold standing. A pod of another attempt has another key, so it
// never stands in for this attempt's hold. Holds end when spent, when the job
// re-places (a new holder replaces the old), or on Release (the attempt
// abandoned, the job finished, suspended or deleted). They live in memory
// only: a new operator rebuilds them from the jobs' status.placement with
// Hold (the TrainingJob controller does, before it places anything).
// Holds outlive a cluster's removal (a reconnect) and come back with it.
//
// Thread-safe. PlaceAndHold places on a copy outside the lock and reserves
// on the master under it, checking every node's room again; a decision
// overtaken by another is placed again (the last try under the lock), so
// two concurrent decisions never both count the same free GPUs.
#ifndef KILN_OPERATOR_FLEET_CAPACITY_VIEW_H_
#define KILN_OPERATOR_FLEET_CAPACITY_VIEW_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "kube/informer.h"
#include "operator/fleet/node_and_pod.h"
#include "operator/placement/gang.h"
#include "operator/placement/placement.h"
#include "operator/placement/snapshot.h"

namespace kiln::fleet {

// One member cluster's capacity, as its MemberCluster status shows it.
struct ClusterCapacity {
  int32_t node_count = 0;         // every node
  int32_t schedulable_nodes = 0;  // Ready and not spec.unschedulable (quarantined or not)
  int32_t quarantined_nodes = 0;  // with the kiln.dev/quarantined taint
  placement::Capacity total;      // nodes that take work, their GPUs and free GPUs
  // The same, grouped by GPU product, zone, rack and NVLink domain ("" for
  // nodes without the label).
  std::map<std::string, placement::Capacity> by_product, by_zone, by_rack, by_nvlink_domain;
  int32_t pending_pods = 0;  // unbound pods asking for GPUs
  int64_t pending_gpus = 0;  // what they ask for

  bool operator==(const ClusterCapacity&) const = default;
};

// Where one rank of a decided placement runs and what it holds there.
struct WorkerHold {
  std::string cluster;
  std::string node;
  placement::Resources resources;

  bool operator==(const WorkerHold&) const = default;
};

class CapacityView {
 public:
  CapacityView() = default;
  CapacityView(const CapacityView&) = delete;
  CapacityView& operator=(const CapacityView&) = delete;

  // Adds a cluster or updates its info (health, cordon, weight, priority);
  // its nodes and pods stay. Call before feeding the cluster's events.
  void UpsertCluster(placement::ClusterInfo info);
  // Forgets a cluster with its nodes and pods (its informers must be stopped).
  void RemoveCluster(const std::string& cluster);

  // Informer events of `cluster`. Events of an unknown cluster, and objects
  // that do not parse, are dropped (logged).
  void OnNode(const std::string& cluster, const nlohmann::json& node);
  void OnNodeDeleted(const std::string& cluster, const nlohmann::json& node);
  void OnPod(const std::string& cluster, const nlohmann::json& pod);
  void OnPodDeleted(const std::string& cluster, const nlohmann::json& pod);
  // Handlers feeding the above, for a member's node and pod informers.
  kube::EventHandlers NodeHandlers(const std::string& cluster);
  kube::EventHandlers PodHandlers(const std::string& cluster);

  // Places `gang` (named by its job, "namespace/name") and holds the
  // placement under `holder` (AttemptHolder of the job's UID and attempt),
  // atomically with respect to every other PlaceAndHold: what the job held
  // before is dropped first. Place's errors as they are; a placement that
  // keeps being overtaken is made under the lock on its last try.
  StatusOr<placement::Placement> PlaceAndHold(const placement::Gang& gang,
                                              const std::string& holder);
  // Holds `ranks` (index = rank; an empty node holds nothing for that rank)
  // for `job` under `holder`, replacing what the job held: a decision
  // already made (status.placement), so room is not checked. Ranks whose pod
  // the view already has bound are not held (the pod counts).
  void Hold(const std::string& job, const std::string& holder,
            const std::vector<WorkerHold>& ranks);
  // Drops what `job` holds. A no-op when it holds nothing.
  void Release(const std::string& job);
  // The holder of `job` and its ranks still held (not yet replaced by their
  // bound pods): for tests and logs. Empty when it holds nothing.
  std::vector<int32_t> HeldRanks(const std::string& job) const;

  // A consistent copy of the whole fleet, for placement.
  placement::Snapshot Snapshot() const;
  // The figures of one cluster (zero when unknown).
  ClusterCapacity Capacity(const std::string& cluster) const;
  // Events applied so far (for tests and metrics).
  int64_t events() const;

 private:
  struct Pending {
    int64_t gpus = 0;
  };
  // What one job holds: its holder (current attempt) and the ranks not yet
  // replaced by their bound pods.
  struct JobHold {
    std::string holder;
    std::map<int32_t, WorkerHold> ranks;
  };

  // Takes rank holds into the master snapshot, or out of it. Require mu_.
  void ApplyHold(const std::string& holder, int32_t rank, const WorkerHold& hold);
  void DropHold(const std::string& holder, int32_t rank, const WorkerHold& hold);
  void ReleaseLocked(const std::string& job);
  // The rank hold of `holder`, or nullptr. Requires mu_.
  const WorkerHold* FindHold(const std::string& holder, int32_t rank) const;
  void OnWorkerPod(const std::string& cluster, const WorkerRef& worker, const std::string& node,
                   const placement::Resources& requests, const std::string& pod_key);

  const log::Logger log_{"fleet.capacity"};
  mutable std::mutex mu_;
  placement::Snapshot snapshot_;  // Guarded by mu_.
  // cluster → pod key → what an unbound GPU pod asks for. Guarded by mu_.
  std::map<std::string, std::unordered_map<std::string, Pending>> pending_;
  int64_t events_ = 0;  // Guarded by mu_.
  // Job ("namespace/name") → its hold; holder → job. Guarded by mu_.
  std::map<std::string, JobHold> holds_;
  std::unordered_map<std::string, std::string> job_of_holder_;
};

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_CAPACITY_VIEW_H_
