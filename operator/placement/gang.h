// Gang: what the placement engine is asked to place — identical workers that
// must all be placed at once or not at all. Field names follow the
// TrainingJob API (spec.workers, spec.placement, spec.elastic) so the
// TrainingJob controller maps a spec onto a Gang field by field
// (trainingjob_gang.h does it). A plain value; thread-safe to share once built.
#ifndef KILN_OPERATOR_PLACEMENT_GANG_H_
#define KILN_OPERATOR_PLACEMENT_GANG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "operator/placement/label_selector.h"
#include "operator/placement/resources.h"
#include "operator/placement/taints.h"
#include "operator/placement/well_known.h"

namespace kiln::placement {

// spec.placement.strategy.
enum class Strategy {
  // Fill the fewest, tightest topology domains, and within them the fewest,
  // tightest nodes: the best collective bandwidth, and the big holes stay
  // whole for the next big gang.
  kBinPack,
  // Put workers in as many domains (and nodes) as possible: the smallest blast
  // radius.
  kSpread,
};

// spec.elastic, as placement reads it.
struct ElasticPolicy {
  int32_t min_replicas = 1;
  // The largest size to place: spec.workers.replicas (which `kubectl scale`
  // sets, within spec.elastic.maxReplicas).
  int32_t max_replicas = 1;
  // When > 0, a size must divide it: globalBatchSize / microBatchSize, so
  // the global batch splits into whole micro-batches (gradient accumulation)
  // at every size. 0: any size.
  int64_t batch_units = 0;

  // Whether `size` lies in [min_replicas, max_replicas] and divides batch_units.
  bool Allows(int64_t size) const {
    return size >= min_replicas && size <= max_replicas &&
           (batch_units <= 0 || batch_units % size == 0);
  }

  bool operator==(const ElasticPolicy&) const = default;
};

struct Gang {
  // "namespace/name" of the job: names the gang in reasons and results, keys
  // its reservations (WorkerPodKey) and breaks ties in the batch order.
  std::string name;

  // spec.workers.replicas: the gang's size when not elastic.
  int32_t replicas = 1;
  // spec.elastic: when set, the largest size ElasticPolicy::Allows that fits
  // (replicas is then ignored).
  std::optional<ElasticPolicy> elastic;
  // spec.workers.gpusPerWorker; 0 runs CPU workers.
  int32_t gpus_per_worker = 8;
  // spec.workers.resources.requests (cpu, memory); the GPU amount is
  // gpus_per_worker.
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 0;
  // spec.workers.nodeSelector: labels every worker's node must carry.
  std::map<std::string, std::string> node_selector;
  // spec.workers.tolerations.
  std::vector<Toleration> tolerations;

  // spec.placement.strategy.
  Strategy strategy = Strategy::kBinPack;
  // spec.placement.topologyKey: the node label whose values are the domains
  // the strategy packs into or spreads over. A node without the label is a
  // domain of its own.
  std::string topology_key = kNvlinkDomainLabel;
  // All workers in one domain of topology_key, or no placement. Not in the
  // TrainingJob API yet (there the key is a preference); the reason quoted in
  // issue 13 ("needs 16 GPUs ... in one NVLink domain") is this mode's.
  bool require_single_domain = false;
  // spec.placement.clusterSelector: member clusters by their labels; empty:
  // any.
  LabelSelector cluster_selector;
  // spec.placement.allowMultiCluster: may the gang span clusters when no one
  // cluster has room.
  bool allow_multi_cluster = false;

  // Batch order (PlaceBatch): higher priority first, then lower queue_order
  // (e.g. creation time in seconds), then name. From the worker pods'
  // PriorityClass value.
  int32_t priority = 0;
  int64_t queue_order = 0;

  // Nodes this gang must not use, as "cluster/node" (status.quarantinedNodes,
  // the node a fault just came from).
  std::vector<std::string> avoid_nodes;

  // What one worker asks of its node.
  Resources PerWorker() const { return {gpus_per_worker, cpu_millis, memory_bytes}; }
};

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_GANG_H_
