// CapacityView: the fleet's capacity as one placement::Snapshot, kept current
// from the member clusters' node and pod informers, and the per-cluster
// figures MemberCluster status reports. Placement takes a copy (Snapshot(),
// a few pointer copies per cluster) and reads it without locks; informer
// events mutate the master copy, cloning only what a held copy still shares.
//
// Every bound, non-terminal pod holds its requests on its node (kiln's or
// not: GPUs another workload holds are not free); unbound pods that ask for
// GPUs are counted as pending. Thread-safe.
#ifndef KILN_OPERATOR_FLEET_CAPACITY_VIEW_H_
#define KILN_OPERATOR_FLEET_CAPACITY_VIEW_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "kube/informer.h"
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

  const log::Logger log_{"fleet.capacity"};
  mutable std::mutex mu_;
  placement::Snapshot snapshot_;  // Guarded by mu_.
  // cluster → pod key → what an unbound GPU pod asks for. Guarded by mu_.
  std::map<std::string, std::unordered_map<std::string, Pending>> pending_;
  int64_t events_ = 0;  // Guarded by mu_.
};

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_CAPACITY_VIEW_H_
