#include "operator/placement/placement.h"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

#include "operator/placement/well_known.h"

namespace kiln::placement {

namespace {

// A node with room for at least one worker of the gang.
struct NodeCap {
  const std::string* name;
  int64_t fit;  // workers of this gang it can take
};

// A topology domain with room.
struct DomainCap {
  std::string value;           // the topology label's value ("" for a node without it)
  std::string display;         // value, or the node's name for a node without it
  std::vector<NodeCap> nodes;  // its nodes with room, in name order, unless `indexed`
  int64_t fit = 0;
  // An indexed domain: its nodes are those of `indexed` with a fit in the
  // cluster's slot_fits (listed only for the domains a plan uses).
  const Snapshot::Domain* indexed = nullptr;
};

// A cluster's domains with room, in display order.
struct ClusterCap {
  const Snapshot::Cluster* cluster;
  std::vector<DomainCap> domains;
  int64_t fit = 0;
  std::vector<int64_t> slot_fits;  // per slot, for indexed domains
  int64_t largest_domain_fit = 0;
  const DomainCap* largest_domain = nullptr;
};

// Why nodes were left out, for reasons.
struct Rejections {
  int considered = 0;
  int eligible = 0;
  int unschedulable = 0;
  int quarantined = 0;
  int avoided = 0;
  int selector = 0;
  int tainted = 0;
  std::map<std::string, int> taints;  // "key=value:Effect" → nodes
  std::set<std::string> products;     // GPU products of eligible nodes
  std::string_view last_product;      // skips the set for runs of one product
};

// How many workers go on one node, one domain, one cluster.
struct NodeShare {
  const std::string* node;
  int64_t workers;
};
struct DomainShare {
  const DomainCap* domain;
  std::vector<NodeShare> nodes;
};
struct ClusterPlan {
  const ClusterCap* cap;
  std::vector<DomainShare> domains;
  int64_t workers = 0;
  int64_t leftover = 0;  // room left in the domains used
};

class Request {
 public:
  explicit Request(const Gang& gang)
      : gang_(gang),
        per_worker_(gang.PerWorker()),
        simple_(gang.tolerations.empty() && gang.avoid_nodes.empty()) {
    for (const auto& node : gang.avoid_nodes) avoid_.insert(node);
    // The GPU product, the usual selector, is read from the snapshot's flat
    // per-slot view instead of each node's label map.
    for (const auto& [key, value] : gang.node_selector) {
      if (key == kGpuProductLabel) {
        product_ = value;
      } else {
        other_selector_.emplace_back(key, value);
        simple_ = false;
      }
    }
  }

  // Scans a cluster: every node that may take a worker and has room for one,
  // grouped by domain. `cap` bounds per-node fits. Indexed domains with
  // fewer free GPUs than `domain_floor_gpus` are skipped unvisited, unless
  // `explain` asks for every node to be counted in `rejections`.
  ClusterCap Scan(const Snapshot::Cluster& c, int64_t cap, int64_t domain_floor_gpus, bool explain,
                  Rejections& rejections) const {
    ClusterCap out{&c, {}, 0, {}, 0, nullptr};
    const int key = c.KeyIndex(gang_.topology_key);
    bool singletons = false;
    if (key >= 0) {
      // One sweep over the slots' flat arrays; node names (a map) are only
      // walked for the domains a plan ends up using.
      const auto k = static_cast<size_t>(key);
      out.slot_fits.assign(c.slot_count(), 0);
      std::vector<int64_t> domain_fit(c.domain_id_count(k), 0);
      for (size_t slot = 0; slot < c.slot_count(); ++slot) {
        if (!c.live(slot)) continue;
        const size_t d = c.domain_of(k, slot);
        if (!explain && c.domain_free_gpus(k, d) < domain_floor_gpus) continue;
        // For a simple gang an open node is eligible; the others are looked at
        // in full only to say why they were left out.
        const bool ok = simple_ && c.open(slot) && ProductMatches(c, slot)
                            ? CountOpen(c, slot, explain, rejections)
                            : Eligible(c, slot, rejections);
        if (!ok) continue;
        const int64_t fit = WorkersThatFit(c.free(slot), per_worker_, cap);
        out.slot_fits[slot] = fit;
        domain_fit[d] += fit;
      }
      for (const size_t id : c.domain_order(k)) {
        const int64_t fit = domain_fit[id];
        if (fit == 0) continue;
        const Snapshot::Domain& domain = c.domain(k, id);
        const std::string& value = domain.value;
        if (!value.empty()) {
          out.domains.push_back(DomainCap{value, value, {}, fit, &domain});
          continue;
        }
        // Nodes without the topology label: each is a domain of its own.
        singletons = true;
        for (const auto& [name, slot] : domain.nodes) {
          const int64_t node_fit = out.slot_fits[slot];
          if (node_fit > 0) {
            out.domains.push_back(DomainCap{value, name, {NodeCap{&name, node_fit}}, node_fit});
          }
        }
      }
    } else {
      singletons = true;
      // An unindexed key: group the nodes here. The names point into the
      // snapshot, which outlives the placement.
      std::map<std::string_view, std::vector<std::pair<const std::string*, size_t>>> grouped;
      for (const auto& [name, slot] : c.nodes()) {
        grouped[c.node(slot).Label(gang_.topology_key)].emplace_back(&name, slot);
      }
      for (const auto& [value, members] : grouped) {
        AddDomain(c, std::string(value), members, cap, rejections, out);
      }
    }
    // Nodes without the label became domains of their own; keep display order.
    if (singletons) {
      std::sort(out.domains.begin(), out.domains.end(),
                [](const DomainCap& a, const DomainCap& b) { return a.display < b.display; });
    }
    for (const auto& d : out.domains) {
      out.fit += d.fit;
      if (d.fit > out.largest_domain_fit) out.largest_domain_fit = d.fit;
    }
    for (const auto& d : out.domains) {
      if (d.fit == out.largest_domain_fit) {
        out.largest_domain = &d;
        break;
      }
    }
    return out;
  }

 private:
  bool ProductMatches(const Snapshot::Cluster& c, size_t slot) const {
    return !product_ || c.gpu_product(slot) == *product_;
  }

  static void CountProduct(const Snapshot::Cluster& c, size_t slot, Rejections& r) {
    const std::string_view product = c.gpu_product(slot);
    if (!product.empty() && c.allocatable(slot).gpus > 0 && product != r.last_product) {
      r.last_product = *r.products.emplace(product).first;
    }
  }

  static bool CountOpen(const Snapshot::Cluster& c, size_t slot, bool explain, Rejections& r) {
    if (explain) {
      ++r.considered;
      ++r.eligible;
      CountProduct(c, slot, r);
    }
    return true;
  }

  // Whether the gang may use the node at all; counts the reason when not.
  bool Eligible(const Snapshot::Cluster& c, size_t slot, Rejections& r) const {
    const NodeInfo& node = c.node(slot);
    ++r.considered;
    bool quarantine_taint = false;
    for (const auto& t : node.taints) quarantine_taint |= t.key == kQuarantineTaint;
    if (node.quarantined || quarantine_taint) {
      ++r.quarantined;
      return false;
    }
    if (!node.schedulable) {
      ++r.unschedulable;
      return false;
    }
    if (!avoid_.empty() && avoid_.count(c.info().name + "/" + node.name) > 0) {
      ++r.avoided;
      return false;
    }
    bool selected = ProductMatches(c, slot);
    for (const auto& [key, value] : other_selector_) {
      if (!selected) break;
      auto it = node.labels.find(key);
      selected = it != node.labels.end() && it->second == value;
    }
    if (!selected) {
      ++r.selector;
      return false;
    }
    if (const Taint* t = FirstUntoleratedTaint(node.taints, gang_.tolerations)) {
      ++r.tainted;
      ++r.taints[t->key + (t->value.empty() ? "" : "=" + t->value) + ":" + t->effect];
      return false;
    }
    ++r.eligible;
    CountProduct(c, slot, r);
    return true;
  }

  static const std::string& NameOf(const std::string& name) { return name; }
  static const std::string& NameOf(const std::string* name) { return *name; }

  // Adds a domain's nodes with room to `out`. `nodes` holds (name, slot)
  // pairs, the name as a string in the snapshot or a pointer to one.
  template <typename Nodes>
  void AddDomain(const Snapshot::Cluster& c, const std::string& value, const Nodes& nodes,
                 int64_t cap, Rejections& rejections, ClusterCap& out) const {
    DomainCap domain{value, value, {}, 0, nullptr};
    for (const auto& [name_ref, slot] : nodes) {
      const std::string& name = NameOf(name_ref);
      if (!Eligible(c, slot, rejections)) continue;
      const int64_t fit = WorkersThatFit(c.free(slot), per_worker_, cap);
      if (fit <= 0) continue;
      if (value.empty()) {
        // A node without the topology label is a domain of its own.
        out.domains.push_back(DomainCap{value, name, {NodeCap{&name, fit}}, fit, nullptr});
        continue;
      }
      domain.nodes.push_back(NodeCap{&name, fit});
      domain.fit += fit;
    }
    if (domain.fit > 0) out.domains.push_back(std::move(domain));
  }

  const Gang& gang_;
  Resources per_worker_;
  // No tolerations, avoid list or selector beyond the GPU product: a node's
  // open flag and product decide.
  bool simple_;
  std::optional<std::string> product_;
  std::vector<std::pair<std::string, std::string>> other_selector_;
  std::unordered_set<std::string> avoid_;
};

// Items (domains, nodes) come in name order, so an item's index breaks ties
// as its name would, without comparing strings.
//
// Chooses how many of `k` go to each item: the tightest single item that
// holds all that is left, else the largest item whole and repeat. Fewest
// items, smallest hole left. Returns (index, count) pairs; empty when the
// items cannot hold k.
template <typename FitOf>
std::vector<std::pair<size_t, int64_t>> PackFewestTightest(size_t n, int64_t k, FitOf fit_of) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (fit_of(a) != fit_of(b)) return fit_of(a) > fit_of(b);
    return a < b;
  });
  std::vector<std::pair<size_t, int64_t>> out;
  auto i = order.begin();
  while (k > 0 && i != order.end()) {
    // [i, j) are the items that hold all of k (fits descend).
    auto j = std::partition_point(i, order.end(), [&](size_t x) { return fit_of(x) >= k; });
    if (j != i) {
      const int64_t tightest = fit_of(*(j - 1));
      auto p = std::partition_point(i, j, [&](size_t x) { return fit_of(x) > tightest; });
      out.emplace_back(*p, k);
      return out;
    }
    out.emplace_back(*i, fit_of(*i));
    k -= fit_of(*i);
    ++i;
  }
  if (k > 0) out.clear();
  return out;
}

// Deals `k` one at a time over the items (most room first, then name), as
// many items as possible. Returns (index, count) pairs, in deal order.
template <typename FitOf>
std::vector<std::pair<size_t, int64_t>> DealRoundRobin(size_t n, int64_t k, FitOf fit_of) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (fit_of(a) != fit_of(b)) return fit_of(a) > fit_of(b);
    return a < b;
  });
  std::vector<int64_t> counts(n, 0);
  // Water-fill: every item gets min(fit, level); the last, partial level goes
  // to the first items in order.
  int64_t left = k;
  size_t active = n;
  int64_t level = 0;
  while (left > 0 && active > 0) {
    // Items in order[0, active) still have room above `level` (fits descend).
    const int64_t smallest = fit_of(order[active - 1]) - level;
    const int64_t full_rounds = std::min<int64_t>(smallest, left / static_cast<int64_t>(active));
    if (full_rounds == 0) {
      for (size_t x = 0; x < active && left > 0; ++x, --left) ++counts[order[x]];
      break;
    }
    for (size_t x = 0; x < active; ++x) counts[order[x]] += full_rounds;
    left -= full_rounds * static_cast<int64_t>(active);
    level += full_rounds;
    while (active > 0 && fit_of(order[active - 1]) <= level) --active;
  }
  std::vector<std::pair<size_t, int64_t>> out;
  if (left > 0) return out;
  for (size_t x : order) {
    if (counts[x] > 0) out.emplace_back(x, counts[x]);
  }
  return out;
}

// Places `k` workers within one cluster; nullopt when its domains cannot hold
// them (under the gang's single-domain rule).
std::optional<ClusterPlan> PlanInCluster(const Gang& gang, const ClusterCap& cap, int64_t k) {
  const auto& domains = cap.domains;
  auto domain_fit = [&](size_t i) { return domains[i].fit; };
  std::vector<std::pair<size_t, int64_t>> per_domain;
  if (gang.strategy == Strategy::kSpread && !gang.require_single_domain) {
    per_domain = DealRoundRobin(domains.size(), k, domain_fit);
  } else {
    per_domain = PackFewestTightest(domains.size(), k, domain_fit);
    if (gang.require_single_domain && per_domain.size() > 1) per_domain.clear();
  }
  if (per_domain.empty()) return std::nullopt;

  ClusterPlan plan{&cap, {}, k, 0};
  for (const auto& [d, count] : per_domain) {
    const DomainCap& domain = domains[d];
    plan.leftover += domain.fit - count;
    std::vector<NodeCap> listed;
    if (domain.indexed != nullptr) {
      for (const auto& [name, slot] : domain.indexed->nodes) {
        if (cap.slot_fits[slot] > 0) listed.push_back(NodeCap{&name, cap.slot_fits[slot]});
      }
    }
    const std::vector<NodeCap>& nodes = domain.indexed != nullptr ? listed : domain.nodes;
    auto node_fit = [&](size_t i) { return nodes[i].fit; };
    auto per_node = gang.strategy == Strategy::kSpread
                        ? DealRoundRobin(nodes.size(), count, node_fit)
                        : PackFewestTightest(nodes.size(), count, node_fit);
    DomainShare share{&domain, {}};
    for (const auto& [n, workers] : per_node)
      share.nodes.push_back(NodeShare{nodes[n].name, workers});
    plan.domains.push_back(std::move(share));
  }
  return plan;
}

std::string DomainNoun(const std::string& key) {
  if (key == kNvlinkDomainLabel) return "NVLink domain";
  if (key == kRackLabel) return "rack";
  if (key == kZoneLabel) return "zone";
  if (key == kHostnameLabel) return "node";
  return "domain of " + key;
}

std::string Plural(int64_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string FormatMemory(int64_t bytes) {
  constexpr int64_t kGi = int64_t{1} << 30;
  constexpr int64_t kMi = int64_t{1} << 20;
  if (bytes % kGi == 0) return std::to_string(bytes / kGi) + "Gi";
  if (bytes % kMi == 0) return std::to_string(bytes / kMi) + "Mi";
  return std::to_string(bytes) + " bytes";
}

// "16 GPUs (2 workers x 8)" or "3 workers (4 CPU, 16Gi memory each)".
std::string Amount(const Gang& gang, int64_t workers) {
  if (gang.gpus_per_worker > 0) {
    return Plural(workers * gang.gpus_per_worker, "GPU", "GPUs") + " (" +
           Plural(workers, "worker", "workers") + " x " + std::to_string(gang.gpus_per_worker) +
           ")";
  }
  std::string each;
  if (gang.cpu_millis > 0) {
    each = gang.cpu_millis % 1000 == 0 ? std::to_string(gang.cpu_millis / 1000) + " CPU"
                                       : std::to_string(gang.cpu_millis) + "m CPU";
  }
  if (gang.memory_bytes > 0) {
    each += (each.empty() ? "" : ", ") + FormatMemory(gang.memory_bytes) + " memory";
  }
  return Plural(workers, "CPU worker", "CPU workers") +
         (each.empty() ? "" : " (" + each + " each)");
}

// "8" GPUs or "3 workers": how much of the gang a block has room for.
std::string FreeAmount(const Gang& gang, int64_t workers) {
  if (gang.gpus_per_worker > 0) return std::to_string(workers * gang.gpus_per_worker);
  return Plural(workers, "worker", "workers");
}

std::string Summarize(const Rejections& r, const std::vector<std::string>& skipped_clusters) {
  std::vector<std::string> parts;
  if (r.quarantined > 0) parts.push_back(std::to_string(r.quarantined) + " quarantined");
  if (r.unschedulable > 0) parts.push_back(std::to_string(r.unschedulable) + " unschedulable");
  if (r.avoided > 0) parts.push_back(std::to_string(r.avoided) + " avoided by the job");
  if (r.selector > 0) parts.push_back(std::to_string(r.selector) + " not matching nodeSelector");
  for (const auto& [taint, nodes] : r.taints) {
    parts.push_back(std::to_string(nodes) + " with untolerated taint " + taint);
  }
  std::string out;
  const int skipped = r.considered - r.eligible;
  if (skipped > 0) {
    out = std::to_string(skipped) + " of " + Plural(r.considered, "node", "nodes") + " skipped (";
    for (size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
    out += ")";
  }
  for (const auto& s : skipped_clusters) out += (out.empty() ? "" : "; ") + s;
  return out;
}

Status Fail(std::string reason, std::string message, int64_t needed = 0, int64_t largest = 0,
            std::string where = "") {
  auto detail = std::make_shared<PlacementFailure>();
  detail->reason = std::move(reason);
  detail->needed_workers = needed;
  detail->largest_free_workers = largest;
  detail->largest_free_in = std::move(where);
  const StatusCode code = detail->reason == "InvalidGang" ? StatusCode::kInvalidArgument
                                                          : StatusCode::kResourceExhausted;
  return Status(code, std::move(message)).WithDetail(std::move(detail));
}

// The smallest size the gang may run at (elastic: the smallest allowed
// one), or nullopt when no size is allowed.
std::optional<int64_t> SmallestSize(const Gang& gang) {
  if (!gang.elastic) return gang.replicas;
  for (int64_t size = gang.elastic->min_replicas; size <= gang.elastic->max_replicas; ++size) {
    if (gang.elastic->Allows(size)) return size;
  }
  return std::nullopt;
}

Status Validate(const Gang& gang) {
  auto invalid = [&](const std::string& why) {
    return Fail("InvalidGang", "gang " + gang.name + ": " + why);
  };
  if (gang.elastic) {
    if (gang.elastic->min_replicas < 1) return invalid("elastic.minReplicas must be at least 1");
    if (gang.elastic->min_replicas > gang.elastic->max_replicas) {
      return invalid("elastic.minReplicas exceeds the size asked for");
    }
    if (!SmallestSize(gang)) {
      return invalid("no size in [" + std::to_string(gang.elastic->min_replicas) + ", " +
                     std::to_string(gang.elastic->max_replicas) +
                     "] divides the global batch into whole micro-batches (" +
                     std::to_string(gang.elastic->batch_units) + " of them)");
    }
  } else if (gang.replicas < 1) {
    return invalid("workers.replicas must be at least 1");
  }
  if (gang.gpus_per_worker < 0 || gang.cpu_millis < 0 || gang.memory_bytes < 0) {
    return invalid("resource requests must not be negative");
  }
  if (gang.topology_key.empty()) return invalid("placement.topologyKey is empty");
  return Status::Ok();
}

Placement Assemble(const Gang& gang, const std::vector<ClusterPlan>& plans) {
  Placement p;
  p.gang = gang.name;
  p.per_worker = gang.PerWorker();
  p.topology_key = gang.topology_key;
  for (const auto& plan : plans) {
    const std::string& cluster = plan.cap->cluster->info().name;
    ClusterShare share{cluster, 0, {}};
    for (const auto& d : plan.domains) {
      p.domains.push_back(cluster + "/" + d.domain->display);
      for (const auto& n : d.nodes) {
        share.nodes.push_back(*n.node);
        for (int64_t w = 0; w < n.workers; ++w) {
          p.workers.push_back(WorkerAssignment{cluster, *n.node, d.domain->value});
        }
        share.workers += static_cast<int32_t>(n.workers);
      }
    }
    p.clusters.push_back(std::move(share));
  }
  p.replicas = static_cast<int32_t>(p.workers.size());
  return p;
}

// A cluster of weight 0 only when nothing else fits; then priority, high first.
auto ClusterRank(const Snapshot::Cluster& c) {
  return std::make_tuple(c.info().weight == 0 ? 1 : 0, -c.info().priority);
}

}  // namespace

StatusOr<Placement> Place(const Gang& gang, const Snapshot& snapshot) {
  KILN_RETURN_IF_ERROR(Validate(gang));
  const int64_t max_workers = gang.elastic ? gang.elastic->max_replicas : gang.replicas;
  const int64_t min_workers = *SmallestSize(gang);
  const bool multi = gang.allow_multi_cluster && !gang.require_single_domain;
  const Request request(gang);

  // The clusters the gang may use, scanned. The first pass skips clusters and
  // domains whose free GPUs cannot hold what the gang needs of them; only
  // when the gang does not fit does a second pass count every node, for the
  // reason.
  const int64_t gpus = gang.gpus_per_worker;
  // Fits are uncapped so tightness compares real room; a gang that asks for
  // nothing fits anywhere, as many as it wants.
  const int64_t node_cap =
      gang.PerWorker() == Resources{} ? max_workers : std::numeric_limits<int64_t>::max();
  std::vector<std::string> skipped;
  std::vector<ClusterCap> caps;
  Rejections rejections;
  auto scan = [&](bool explain) {
    skipped.clear();
    caps.clear();
    rejections = Rejections{};
    const int64_t cluster_floor = explain ? 0 : (multi ? gpus : min_workers * gpus);
    const int64_t domain_floor =
        explain ? 0 : (gang.require_single_domain ? min_workers * gpus : gpus);
    for (const auto& [name, c] : snapshot.clusters()) {
      if (!c.info().reachable) {
        skipped.push_back("cluster " + name + " unreachable");
      } else if (c.info().cordoned) {
        skipped.push_back("cluster " + name + " cordoned");
      } else if (!gang.cluster_selector.Matches(c.info().labels)) {
        skipped.push_back("cluster " + name + " not matching clusterSelector " +
                          gang.cluster_selector.ToString());
      } else if (c.free_gpus() >= cluster_floor) {
        caps.push_back(request.Scan(c, node_cap, domain_floor, explain, rejections));
      }
    }
  };
  scan(/*explain=*/false);

  // The most workers one allowed block holds, and the size to place.
  int64_t largest = 0;
  std::string largest_in;
  int64_t fleet = 0;
  auto compute_largest = [&] {
    largest = 0;
    largest_in.clear();
    fleet = 0;
    for (const auto& cap : caps) {
      fleet += cap.fit;
      const int64_t block = gang.require_single_domain ? cap.largest_domain_fit : cap.fit;
      if (block > largest) {
        largest = block;
        largest_in = cap.cluster->info().name;
        if (gang.require_single_domain) largest_in += "/" + cap.largest_domain->display;
      }
    }
    if (multi && fleet > largest) {
      largest = fleet;
      largest_in = "fleet";
    }
  };
  compute_largest();
  int64_t workers = std::min(max_workers, largest);
  // Elastic: the largest allowed size that fits (min_workers is allowed).
  while (gang.elastic && workers > min_workers && !gang.elastic->Allows(workers)) --workers;
  if (workers < min_workers) {
    scan(/*explain=*/true);
    compute_largest();
    if (caps.empty()) {
      std::string why = "no member cluster may take gang " + gang.name;
      if (!skipped.empty()) why += ": " + Summarize(rejections, skipped);
      return Fail("NoEligibleCluster", why, min_workers);
    }
    if (rejections.eligible == 0) {
      return Fail("NoEligibleNode",
                  "no node may take gang " + gang.name + ": " + Summarize(rejections, skipped),
                  min_workers);
    }
    std::string product =
        gang.node_selector.count(kGpuProductLabel) > 0
            ? gang.node_selector.at(kGpuProductLabel)
            : (rejections.products.size() == 1 ? *rejections.products.begin() : "");
    std::string why = "gang " + gang.name + " needs " + (gang.elastic ? "at least " : "") +
                      Amount(gang, min_workers);
    if (gang.gpus_per_worker > 0 && !product.empty()) why += " of " + product;
    if (gang.require_single_domain) {
      why += " in one " + DomainNoun(gang.topology_key);
    } else if (!multi) {
      why += " in one cluster";
    } else {
      why += " across the fleet";
    }
    why += "; largest free: " + FreeAmount(gang, largest);
    if (largest > 0) why += " in " + largest_in;
    if (!multi && !gang.require_single_domain && fleet >= min_workers) {
      why += " (allowMultiCluster is off; all clusters together have room for " +
             FreeAmount(gang, fleet) + ")";
    }
    const std::string summary = Summarize(rejections, skipped);
    if (!summary.empty()) why += "; " + summary;
    return Fail("InsufficientCapacity", why, min_workers, largest, largest_in);
  }

  // One cluster if one holds the gang: the best by the strategy.
  std::optional<ClusterPlan> best;
  auto better = [&](const ClusterPlan& a, const ClusterPlan& b) {
    const auto& ca = *a.cap->cluster;
    const auto& cb = *b.cap->cluster;
    if (ClusterRank(ca) != ClusterRank(cb)) return ClusterRank(ca) < ClusterRank(cb);
    const int64_t da = static_cast<int64_t>(a.domains.size());
    const int64_t db = static_cast<int64_t>(b.domains.size());
    if (gang.strategy == Strategy::kBinPack) {
      if (da != db) return da < db;
      if (a.leftover != b.leftover) return a.leftover < b.leftover;
      if (ca.info().weight != cb.info().weight) return ca.info().weight > cb.info().weight;
    } else {
      if (da != db) return da > db;
      const int64_t sa = a.cap->fit * ca.info().weight;
      const int64_t sb = b.cap->fit * cb.info().weight;
      if (sa != sb) return sa > sb;
    }
    return ca.info().name < cb.info().name;
  };
  for (const auto& cap : caps) {
    if (cap.fit < workers) continue;
    auto plan = PlanInCluster(gang, cap, workers);
    if (plan && (!best || better(*plan, *best))) best = std::move(plan);
  }
  if (best) return Assemble(gang, {*best});

  // Else across clusters, when allowed: fill them in order.
  if (multi) {
    std::vector<const ClusterCap*> order;
    for (const auto& cap : caps) {
      if (cap.fit > 0) order.push_back(&cap);
    }
    std::sort(order.begin(), order.end(), [](const ClusterCap* a, const ClusterCap* b) {
      if (ClusterRank(*a->cluster) != ClusterRank(*b->cluster)) {
        return ClusterRank(*a->cluster) < ClusterRank(*b->cluster);
      }
      if (a->fit != b->fit) return a->fit > b->fit;
      return a->cluster->info().name < b->cluster->info().name;
    });
    std::vector<ClusterPlan> plans;
    int64_t left = workers;
    for (const ClusterCap* cap : order) {
      if (left == 0) break;
      auto plan = PlanInCluster(gang, *cap, std::min(left, cap->fit));
      if (!plan) continue;
      left -= plan->workers;
      plans.push_back(std::move(*plan));
    }
    if (left == 0) return Assemble(gang, plans);
  }
  return Status::Internal("placement of gang " + gang.name +
                          " found capacity but no plan (a bug in the placement engine)");
}

std::string WorkerPodKey(std::string_view holder, int32_t rank) {
  return std::string(holder) + "#" + std::to_string(rank);
}

Status Reserve(const Placement& placement, std::string_view holder, Snapshot& snapshot) {
  // Check every node first, so a stale placement holds nothing. Ranks already
  // held where the placement puts them (a repeated Reserve) need no new room.
  std::map<std::pair<std::string, std::string>, int64_t> per_node;
  for (size_t rank = 0; rank < placement.workers.size(); ++rank) {
    const auto& w = placement.workers[rank];
    const std::string* held =
        snapshot.PodNode(w.cluster, WorkerPodKey(holder, static_cast<int32_t>(rank)));
    if (held == nullptr || *held != w.node) ++per_node[{w.cluster, w.node}];
  }
  for (const auto& [where, workers] : per_node) {
    const auto& [cluster, node] = where;
    const Snapshot::Cluster* c = snapshot.cluster(cluster);
    if (c == nullptr) return Status::NotFound("cluster " + cluster + " is gone");
    if (!c->info().reachable || c->info().cordoned) {
      return Status::Aborted("cluster " + cluster + " no longer takes new work");
    }
    auto slot = c->nodes().find(node);
    if (slot == c->nodes().end()) {
      return Status::Aborted("node " + cluster + "/" + node + " is gone");
    }
    if (!c->node(slot->second).TakesWork()) {
      return Status::Aborted("node " + cluster + "/" + node + " no longer takes work");
    }
    const Resources free = c->free(slot->second);
    if (WorkersThatFit(free, placement.per_worker, workers) < workers) {
      return Status::Aborted("node " + cluster + "/" + node + " no longer has room for " +
                             std::to_string(workers) + " workers of " + placement.gang);
    }
  }
  for (size_t rank = 0; rank < placement.workers.size(); ++rank) {
    const auto& w = placement.workers[rank];
    KILN_RETURN_IF_ERROR(snapshot.AddPod(
        w.cluster, w.node, WorkerPodKey(holder, static_cast<int32_t>(rank)), placement.per_worker));
  }
  return Status::Ok();
}

Status Release(const Placement& placement, std::string_view holder, Snapshot& snapshot) {
  for (size_t rank = 0; rank < placement.workers.size(); ++rank) {
    KILN_RETURN_IF_ERROR(snapshot.RemovePod(placement.workers[rank].cluster,
                                            WorkerPodKey(holder, static_cast<int32_t>(rank))));
  }
  return Status::Ok();
}

std::vector<BatchDecision> PlaceBatch(std::span<const Gang> gangs, Snapshot& snapshot) {
  std::vector<const Gang*> order;
  order.reserve(gangs.size());
  for (const auto& g : gangs) order.push_back(&g);
  std::stable_sort(order.begin(), order.end(), [](const Gang* a, const Gang* b) {
    return std::make_tuple(-a->priority, a->queue_order, std::string_view(a->name)) <
           std::make_tuple(-b->priority, b->queue_order, std::string_view(b->name));
  });
  std::vector<BatchDecision> decisions;
  decisions.reserve(order.size());
  for (const Gang* gang : order) {
    StatusOr<Placement> placement = Place(*gang, snapshot);
    if (placement.ok()) {
      Status reserved = Reserve(*placement, snapshot);
      if (!reserved.ok()) placement = reserved.WithContext("reserving gang " + gang->name);
    }
    decisions.push_back(BatchDecision{gang->name, std::move(placement)});
  }
  return decisions;
}

}  // namespace kiln::placement
