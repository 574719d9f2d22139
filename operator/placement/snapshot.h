// Snapshot: the fleet as placement sees it — member clusters, their nodes
// (labels, taints, allocatable resources, whether they take new work) and what
// kiln's bound and pending pods already hold on each node.
//
// Updated incrementally from informer events (UpsertCluster, UpsertNode,
// RemoveNode, AddPod, RemovePod) by the fleet controller, and read by the
// placement engine (placement.h), which also reserves into it.
//
// Design: copy-on-write per cluster, in three parts. Each cluster holds
//   - its topology (nodes, the name index, per indexed topology key the
//     domains and their members, and flat per-slot arrays placement sweeps) —
//     changes only when a node's labels, taints, allocatable or
//     schedulability change, or a node comes or goes;
//   - its usage (resources held per node, free GPUs per domain of each indexed
//     key, free GPUs of the cluster) — changes on every pod event;
//   - its reservations (pod key → node and resources, in 64 shards that are
//     copy-on-write too) — changes on every pod event.
// Each part sits behind a shared_ptr. Copying a Snapshot copies pointers (one
// map entry per cluster: well under a microsecond for 4 clusters), so a
// reader takes a consistent copy and places on it without locks; a mutation
// clones only the part it touches of the one cluster it touches, and only
// while some copy still shares it. A pod event thus costs a few map
// operations, plus at worst one clone of that cluster's usage (a flat array,
// ~28 bytes per node) and of one reservation shard; a node change at worst
// one clone of that cluster's topology (~0.5 ms at 2,500 nodes); node
// heartbeats that change nothing placement reads are no-ops.
// The alternative — one mutable fleet behind a mutex, read under the lock —
// would stall informers for the length of a batch placement; a persistent
// tree per node would make every read slower for a write rate that does not
// need it.
//
// The per-domain free-GPU sums let placement skip whole clusters and domains
// that cannot hold a gang without visiting their nodes. They count only nodes
// that take new work (schedulable and not quarantined).
//
// Thread safety: a Snapshot is a value. Distinct copies may be read and
// mutated on different threads concurrently. One copy must not be mutated
// while another thread reads or copies that same copy: the fleet controller
// keeps its master copy under a mutex and hands out copies under it.
#ifndef KILN_OPERATOR_PLACEMENT_SNAPSHOT_H_
#define KILN_OPERATOR_PLACEMENT_SNAPSHOT_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/statusor.h"
#include "operator/placement/label_selector.h"
#include "operator/placement/resources.h"
#include "operator/placement/taints.h"

namespace kiln::placement {

// A member cluster, from its MemberCluster object and the fleet controller's
// health checks.
struct ClusterInfo {
  std::string name;       // the MemberCluster's name
  Labels labels;          // the MemberCluster's labels (cluster selectors match these)
  bool reachable = true;  // false while the MemberCluster is Unreachable (docs/fleet.md)
  bool cordoned = false;  // spec.cordoned: no new work
  int32_t weight = 100;   // spec.weight: 0 takes work only when nothing else fits
  int32_t priority = 0;   // spec.priority: higher is filled first

  bool operator==(const ClusterInfo&) const = default;
};

// A node, from the member cluster's Node object.
struct NodeInfo {
  std::string name;
  // All of the node's labels; GPU product, zone, rack and NVLink domain are
  // read from the well-known keys (well_known.h), and any label can be a
  // topology key.
  Labels labels;
  std::vector<Taint> taints;  // spec.taints
  Resources allocatable;      // status.allocatable
  // False when spec.unschedulable is set or the Ready condition is not True.
  bool schedulable = true;
  // True when kiln has quarantined the node (the kiln.dev/quarantined taint,
  // or the fleet controller's own list); such nodes get no new work even
  // from gangs that tolerate every taint.
  bool quarantined = false;

  bool operator==(const NodeInfo&) const = default;

  // The label's value, or "" when absent.
  const std::string& Label(std::string_view key) const;
  // Whether the node may take new work at all (schedulable, not quarantined).
  bool TakesWork() const { return schedulable && !quarantined; }
};

// Free capacity of one group of nodes (a cluster, a GPU product, a domain),
// for MemberCluster status and for reasons.
struct Capacity {
  int32_t nodes = 0;          // nodes that take work
  int64_t gpus = 0;           // their allocatable GPUs
  int64_t free_gpus = 0;      // of which not held by kiln's pods
  int32_t quarantined = 0;    // quarantined nodes (not counted above)
  int32_t unschedulable = 0;  // unschedulable, not quarantined, nodes (not counted above)

  bool operator==(const Capacity&) const = default;
};

class Snapshot {
 public:
  // One topology domain of an indexed key in one cluster: its label value
  // and its nodes by name. Nodes without the label are in the domain ""
  // (placement treats each of them as a domain of its own).
  struct Domain {
    std::string value;
    std::map<std::string, size_t, std::less<>> nodes;  // node name → slot
  };

  // One cluster, read-only. Nodes live in slots (stable small integers) so
  // usage can be a flat array; iterate nodes() for name order.
  class Cluster {
   public:
    const ClusterInfo& info() const { return info_; }
    // Node name → slot, in name order.
    const std::map<std::string, size_t, std::less<>>& nodes() const { return topology_->by_name; }
    const NodeInfo& node(size_t slot) const { return *topology_->slots[slot]; }
    const Resources& used(size_t slot) const { return usage_->used[slot]; }
    Resources free(size_t slot) const { return FreeOf(topology_->allocatable[slot], used(slot)); }
    // The index of `key` among the indexed topology keys, or -1 when it is not
    // indexed (placement then groups nodes itself).
    int KeyIndex(std::string_view key) const;
    // The domains of indexed key `key_index` with nodes, as ids in label-value
    // order. Ids are small integers that index the usage arrays; a domain that
    // loses its last node retires its id.
    const std::vector<size_t>& domain_order(size_t key_index) const {
      return topology_->domain_order[key_index];
    }
    const Domain& domain(size_t key_index, size_t id) const {
      return topology_->domains[key_index][id];
    }
    // The id of the domain with label value `value`, if it has nodes.
    std::optional<size_t> FindDomain(size_t key_index, std::string_view value) const;
    // Free GPUs on the nodes of a domain that take work.
    int64_t domain_free_gpus(size_t key_index, size_t domain_id) const {
      return usage_->domain_free[key_index][domain_id];
    }
    // Slots run 0..slot_count(); a slot may be empty (!live). The flat
    // per-slot views below let placement sweep a cluster without chasing a
    // pointer per node.
    size_t slot_count() const { return topology_->slots.size(); }
    bool live(size_t slot) const { return topology_->state[slot] != kEmpty; }
    // Live, taking work and without a NoSchedule or NoExecute taint: any gang
    // may use it (subject to its node selector and avoid list).
    bool open(size_t slot) const { return topology_->state[slot] == kOpen; }
    const Resources& allocatable(size_t slot) const { return topology_->allocatable[slot]; }
    // The node's GPU product label ("" when absent).
    std::string_view gpu_product(size_t slot) const { return topology_->gpu_product[slot]; }
    // The domain id of a slot under indexed key `key_index`.
    size_t domain_of(size_t key_index, size_t slot) const {
      return topology_->slot_domain[key_index][slot];
    }
    // Domain ids of indexed key `key_index` run 0..domain_id_count().
    size_t domain_id_count(size_t key_index) const { return usage_->domain_free[key_index].size(); }
    // Kiln pods (reservations) on a node.
    int32_t pods_on(size_t slot) const { return usage_->pods[slot]; }
    // Free GPUs on all nodes that take work.
    int64_t free_gpus() const { return usage_->free_gpus; }
    // Pods (reservations) held in this cluster.
    size_t pods() const { return reservations_->count; }

   private:
    friend class Snapshot;
    static constexpr size_t kNoDomain = static_cast<size_t>(-1);
    enum SlotState : uint8_t { kEmpty, kOpen, kRestricted };
    struct Topology {
      std::vector<std::shared_ptr<const NodeInfo>> slots;  // nullptr: a free slot
      std::vector<SlotState> state;                        // per slot
      std::vector<Resources> allocatable;                  // per slot
      std::vector<std::string_view> gpu_product;           // per slot, into the NodeInfo
      std::vector<size_t> free_slots;
      std::map<std::string, size_t, std::less<>> by_name;
      std::vector<std::vector<Domain>> domains;                            // [key][id]
      std::vector<std::map<std::string, size_t, std::less<>>> domain_ids;  // [key] value → id
      std::vector<std::vector<size_t>> domain_order;  // [key] ids with nodes, by value
      std::vector<std::vector<size_t>> slot_domain;   // [key][slot] → domain id, kNoDomain: none
    };
    struct Usage {
      std::vector<Resources> used;                    // per slot
      std::vector<int32_t> pods;                      // per slot
      std::vector<std::vector<int64_t>> domain_free;  // [key][domain id] free GPUs
      int64_t free_gpus = 0;
    };
    struct Reservation {
      std::string node;
      Resources resources;
    };
    // Reservations are sharded by key hash, each shard copy-on-write too, so
    // a pod event while a reader holds a copy clones one small shard, not
    // every pod of the cluster.
    static constexpr size_t kReservationShards = 64;
    using ReservationShard = std::unordered_map<std::string, Reservation>;
    struct Reservations {
      std::array<std::shared_ptr<ReservationShard>, kReservationShards> shards;
      size_t count = 0;
      // Reservations naming a node the snapshot does not hold (yet: informers
      // do not order pod events after node events), by node name.
      std::unordered_map<std::string, int> orphans;
    };

    ClusterInfo info_;
    std::shared_ptr<const std::vector<std::string>> keys_;
    std::shared_ptr<Topology> topology_;
    std::shared_ptr<Usage> usage_;
    std::shared_ptr<Reservations> reservations_;
  };

  // The topology keys whose domains are indexed: the NVLink domain, rack and
  // zone labels. Gangs may use other keys; they are grouped on the fly.
  static std::vector<std::string> DefaultIndexedKeys();

  explicit Snapshot(std::vector<std::string> indexed_keys = DefaultIndexedKeys());

  // Adds a cluster or updates its info; its nodes and pods stay.
  void UpsertCluster(ClusterInfo info);
  // Removes a cluster with its nodes and pods. Ok when absent.
  void RemoveCluster(std::string_view cluster);

  // Adds a node or replaces what placement knows of it; the pods it holds
  // stay. A node equal to the one held is a no-op (heartbeats). NotFound when
  // the cluster is unknown.
  Status UpsertNode(std::string_view cluster, NodeInfo node);
  // Removes a node. Its pods' reservations are kept, orphaned, until their
  // own delete events come (or the node returns). Ok when absent.
  Status RemoveNode(std::string_view cluster, std::string_view node);

  // Records that pod `key` (namespace/name, or WorkerPodKey for a placement
  // reserved before its pods exist) holds `resources` on `node`. Idempotent:
  // a key already held is replaced, so an informer's add after Reserve, or a
  // relist, counts once. The node may be unknown yet. Does not check room:
  // informers report what is, over-committed or not. NotFound when the cluster
  // is unknown.
  Status AddPod(std::string_view cluster, std::string_view node, std::string key,
                const Resources& resources);
  // Forgets pod `key`. Ok when absent (deletes are idempotent).
  Status RemovePod(std::string_view cluster, std::string_view key);

  // Reads. Clusters are in name order.
  const std::map<std::string, Cluster, std::less<>>& clusters() const { return clusters_; }
  const Cluster* cluster(std::string_view name) const;
  const std::vector<std::string>& indexed_keys() const { return *indexed_keys_; }
  // The node pod `key` is held on, or nullptr when the pod is unknown.
  const std::string* PodNode(std::string_view cluster, std::string_view key) const;
  // Free resources of a node; NotFound when the cluster or node is unknown.
  StatusOr<Resources> Free(std::string_view cluster, std::string_view node) const;

  // Capacity of a cluster in total and grouped by the value of `label` (e.g.
  // the GPU product for MemberCluster status.gpus, or a topology key). Nodes
  // without the label are grouped under "". Empty when the cluster is unknown.
  Capacity ClusterCapacity(std::string_view cluster) const;
  std::map<std::string, Capacity> CapacityBy(std::string_view cluster,
                                             std::string_view label) const;

 private:
  Cluster* MutableCluster(std::string_view name);
  static Cluster::Topology& MutableTopology(Cluster& c);
  static Cluster::Usage& MutableUsage(Cluster& c);
  static Cluster::Reservations& MutableReservations(Cluster& c);
  static size_t ShardOf(std::string_view key);
  static const Cluster::Reservation* FindPod(const Cluster& c, std::string_view key);
  static Cluster::ReservationShard& MutableShard(Cluster& c, std::string_view key);
  // Adds (sign +1) or removes (-1) a slot's free GPUs from the domain and
  // cluster sums.
  static void SetSlot(Cluster::Topology& topo, size_t slot, NodeInfo node);
  static void AccountFree(Cluster& c, size_t slot, int sign);
  static void AttachToDomains(Cluster& c, size_t slot);
  static void DetachFromDomains(Cluster& c, size_t slot);
  static void Hold(Cluster& c, const std::string& node, const Resources& r, int sign);

  std::shared_ptr<const std::vector<std::string>> indexed_keys_;
  std::map<std::string, Cluster, std::less<>> clusters_;
};

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_SNAPSHOT_H_
