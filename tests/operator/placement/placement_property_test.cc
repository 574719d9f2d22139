// Randomized fleets and gangs (fixed seeds): whatever PlaceBatch decides, no
// node is ever over-committed, every placement is the whole gang on nodes the
// gang may use, and a gang that does not fit holds nothing.
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>

#include <catch2/catch.hpp>

#include "operator/placement/placement.h"
#include "tests/operator/placement/test_fleet.h"

namespace kiln::placement {
namespace {

struct Fleet {
  Snapshot snapshot;
  std::map<std::pair<std::string, std::string>, NodeInfo> nodes;
  std::map<std::pair<std::string, std::string>, Resources> used;  // our own ledger
  std::map<std::string, ClusterInfo> clusters;
};

Fleet RandomFleet(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Fleet f;
  const int clusters = pick(1, 4);
  for (int c = 0; c < clusters; ++c) {
    ClusterInfo info =
        testing::Cluster("c" + std::to_string(c), {{"tier", pick(0, 1) ? "a" : "b"}});
    info.reachable = pick(0, 9) > 0;
    info.cordoned = pick(0, 9) == 0;
    info.priority = pick(-1, 1);
    info.weight = pick(0, 5) == 0 ? 0 : 100;
    f.clusters[info.name] = info;
    f.snapshot.UpsertCluster(info);
    const int nodes = pick(0, 40);
    const int per_nvl = pick(1, 8);
    for (int i = 0; i < nodes; ++i) {
      NodeInfo n = testing::GpuNode(
          info.name + "-n" + std::to_string(i), "nvl-" + std::to_string(i / per_nvl),
          "rack-" + std::to_string(i / 8), "zone-" + std::to_string(i / 20), pick(0, 8),
          pick(0, 3) ? testing::kH100 : "NVIDIA-H200");
      n.allocatable.cpu_millis = 1000 * pick(1, 64);
      n.allocatable.memory_bytes = testing::kGi * pick(1, 512);
      if (pick(0, 5) == 0) n.labels.erase(kNvlinkDomainLabel);
      n.schedulable = pick(0, 9) > 0;
      n.quarantined = pick(0, 14) == 0;
      if (pick(0, 7) == 0) n.taints.push_back({"dedicated", "infra", "NoSchedule"});
      if (pick(0, 15) == 0) n.taints.push_back({kQuarantineTaint, "", "NoSchedule"});
      REQUIRE(f.snapshot.UpsertNode(info.name, n).ok());
      // Existing pods, within the node's room.
      Resources held;
      const int pods = pick(0, 3);
      for (int p = 0; p < pods; ++p) {
        Resources r{pick(0, 2), 500 * pick(0, 4), testing::kGi * pick(0, 32)};
        if (held.gpus + r.gpus > n.allocatable.gpus ||
            held.cpu_millis + r.cpu_millis > n.allocatable.cpu_millis ||
            held.memory_bytes + r.memory_bytes > n.allocatable.memory_bytes) {
          continue;
        }
        held += r;
        REQUIRE(f.snapshot.AddPod(info.name, n.name, n.name + "/pod-" + std::to_string(p), r).ok());
      }
      f.used[{info.name, n.name}] = held;
      f.nodes[{info.name, n.name}] = n;
    }
  }
  return f;
}

Gang RandomGang(std::mt19937& rng, int i) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Gang g;
  g.name = "ns/g" + std::to_string(i);
  g.replicas = pick(1, 24);
  if (pick(0, 3) == 0) g.elastic = ElasticPolicy{pick(1, 4), pick(4, 30)};
  g.gpus_per_worker = pick(0, 8);
  g.cpu_millis = 250 * pick(0, 16);
  g.memory_bytes = testing::kGi * pick(0, 64);
  if (pick(0, 3) == 0) g.node_selector = {{kGpuProductLabel, testing::kH100}};
  if (pick(0, 3) == 0) g.tolerations = {{"dedicated", "Exists", "", ""}};
  if (pick(0, 9) == 0) g.tolerations = {{"", "Exists", "", ""}};
  g.strategy = pick(0, 1) ? Strategy::kSpread : Strategy::kBinPack;
  const char* keys[] = {kNvlinkDomainLabel, kRackLabel, kZoneLabel, kHostnameLabel, "no/such"};
  g.topology_key = keys[pick(0, 4)];
  g.require_single_domain = pick(0, 3) == 0;
  g.allow_multi_cluster = pick(0, 1);
  if (pick(0, 3) == 0) g.cluster_selector.match_labels = {{"tier", "a"}};
  g.priority = pick(0, 3);
  g.queue_order = pick(0, 100);
  return g;
}

bool MayUse(const Gang& g, const ClusterInfo& c, const NodeInfo& n) {
  if (!c.reachable || c.cordoned || !g.cluster_selector.Matches(c.labels)) return false;
  if (!n.schedulable || n.quarantined) return false;
  for (const auto& t : n.taints) {
    if (t.key == kQuarantineTaint) return false;
  }
  for (const auto& [k, v] : g.node_selector) {
    if (n.Label(k) != v) return false;
  }
  return FirstUntoleratedTaint(n.taints, g.tolerations) == nullptr;
}

TEST_CASE("property: random fleets and gangs never over-commit a node, placements are whole",
          "[placement][property]") {
  int placed = 0;
  int refused = 0;
  for (unsigned seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    Fleet f = RandomFleet(rng);
    std::vector<Gang> gangs;
    const int n = std::uniform_int_distribution<int>(1, 25)(rng);
    for (int i = 0; i < n; ++i) gangs.push_back(RandomGang(rng, i));
    std::map<std::string, const Gang*> by_name;
    for (const auto& g : gangs) by_name[g.name] = &g;

    auto decisions = PlaceBatch(gangs, f.snapshot);
    REQUIRE(decisions.size() == gangs.size());
    for (const auto& d : decisions) {
      INFO("seed " << seed << " gang " << d.gang);
      const Gang& g = *by_name.at(d.gang);
      if (!d.placement.ok()) {
        ++refused;
        CHECK(d.placement.status().code() == StatusCode::kResourceExhausted);
        CHECK(d.placement.status().detail<PlacementFailure>() != nullptr);
        continue;
      }
      ++placed;
      const Placement& p = *d.placement;
      // Whole gang, of an allowed size.
      if (g.elastic) {
        CHECK(p.replicas >= g.elastic->min_replicas);
        CHECK(p.replicas <= g.elastic->max_replicas);
      } else {
        CHECK(p.replicas == g.replicas);
      }
      REQUIRE(p.workers.size() == static_cast<size_t>(p.replicas));
      std::set<std::string> clusters;
      std::set<std::string> domains;
      for (const auto& w : p.workers) {
        clusters.insert(w.cluster);
        domains.insert(w.cluster + "/" + w.domain + "/" +
                       (w.domain.empty() ? w.node : std::string()));
        const NodeInfo& node = f.nodes.at({w.cluster, w.node});
        CHECK(MayUse(g, f.clusters.at(w.cluster), node));
        CHECK(w.domain == node.Label(g.topology_key));
        f.used[{w.cluster, w.node}] += p.per_worker;
      }
      if (!g.allow_multi_cluster || g.require_single_domain) CHECK(clusters.size() == 1);
      if (g.require_single_domain) CHECK(domains.size() == 1);
    }
    // Our ledger never exceeds a node, and agrees with the snapshot.
    for (const auto& [where, used] : f.used) {
      INFO("seed " << seed << " node " << where.first << "/" << where.second);
      const Resources& alloc = f.nodes.at(where).allocatable;
      CHECK(used.gpus <= alloc.gpus);
      CHECK(used.cpu_millis <= alloc.cpu_millis);
      CHECK(used.memory_bytes <= alloc.memory_bytes);
      auto free = f.snapshot.Free(where.first, where.second);
      REQUIRE(free.ok());
      CHECK(*free == FreeOf(alloc, used));
    }
    // The domain sums agree with the nodes.
    for (const auto& [name, c] : f.snapshot.clusters()) {
      for (size_t k = 0; k < f.snapshot.indexed_keys().size(); ++k) {
        for (const size_t id : c.domain_order(k)) {
          int64_t sum = 0;
          for (const auto& [node, slot] : c.domain(k, id).nodes) {
            if (c.node(slot).TakesWork()) sum += c.free(slot).gpus;
            CHECK(c.domain(k, id).value == c.node(slot).Label(f.snapshot.indexed_keys()[k]));
          }
          CHECK(c.domain_free_gpus(k, id) == sum);
        }
      }
    }
  }
  INFO("placed " << placed << ", refused " << refused);
  CHECK(placed > 200);
  CHECK(refused > 200);
}

}  // namespace
}  // namespace kiln::placement
