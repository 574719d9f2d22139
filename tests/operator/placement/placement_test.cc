#include "operator/placement/placement.h"

#include <algorithm>
#include <random>
#include <set>

#include <catch2/catch.hpp>

#include "tests/operator/placement/test_fleet.h"

namespace kiln::placement {
namespace {

using testing::AddNodes;
using testing::Cluster;
using testing::GpuGang;
using testing::GpuNode;
using testing::kH100;

std::set<std::string> Values(const Placement& p, std::string WorkerAssignment::*field) {
  std::set<std::string> out;
  for (const auto& w : p.workers) out.insert(w.*field);
  return out;
}

const PlacementFailure& FailureOf(const Status& s) {
  const auto* detail = s.detail<PlacementFailure>();
  REQUIRE(detail != nullptr);
  return *detail;
}

TEST_CASE("BinPack puts the gang in the tightest NVLink domain that holds it", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  // nvl-a: 4 nodes (32 GPUs), nvl-b: 2 nodes (16), nvl-c: 1 node (8).
  for (int i = 0; i < 4; ++i)
    REQUIRE(s.UpsertNode("c1", GpuNode("a" + std::to_string(i), "nvl-a", "r0", "z")).ok());
  for (int i = 0; i < 2; ++i)
    REQUIRE(s.UpsertNode("c1", GpuNode("b" + std::to_string(i), "nvl-b", "r1", "z")).ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("c0", "nvl-c", "r1", "z")).ok());

  auto two = Place(GpuGang("ns/two", 2), s);
  REQUIRE(two.ok());
  CHECK(two->replicas == 2);
  CHECK(two->domains == std::vector<std::string>{"c1/nvl-b"});
  CHECK(Values(*two, &WorkerAssignment::node) == std::set<std::string>{"b0", "b1"});

  auto three = Place(GpuGang("ns/three", 3), s);
  REQUIRE(three.ok());
  CHECK(three->domains == std::vector<std::string>{"c1/nvl-a"});

  // Bigger than any domain: the fewest domains, largest first, then the
  // tightest that holds the rest.
  auto big = Place(GpuGang("ns/big", 6), s);
  REQUIRE(big.ok());
  CHECK(big->domains == std::vector<std::string>{"c1/nvl-a", "c1/nvl-b"});
  CHECK(big->workers.size() == 6);
}

TEST_CASE("BinPack takes the tightest node of the domain", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  for (const char* n : {"x0", "x1", "x2"})
    REQUIRE(s.UpsertNode("c1", GpuNode(n, "nvl", "r", "z")).ok());
  REQUIRE(s.AddPod("c1", "x1", "ns/other", {4, 1000, 0}).ok());
  auto half = Place(GpuGang("ns/half", 1, 4), s);
  REQUIRE(half.ok());
  CHECK(half->workers[0].node == "x1");
  auto three = Place(GpuGang("ns/three", 3, 4), s);  // x1 is too small for all three
  REQUIRE(three.ok());
  CHECK(three->workers[0].node == "x0");
  CHECK(three->workers[2].node == "x1");
}

TEST_CASE("BinPack packs several workers per node and keeps ranks of a node together",
          "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  AddNodes(s, "c1", 4, 4, 4);
  auto p = Place(GpuGang("ns/g", 8, 2), s);  // 16 GPUs: two whole nodes
  REQUIRE(p.ok());
  REQUIRE(p->workers.size() == 8);
  CHECK(Values(*p, &WorkerAssignment::node).size() == 2);
  for (size_t r = 1; r < 4; ++r) CHECK(p->workers[r].node == p->workers[0].node);
  CHECK(p->clusters.size() == 1);
  CHECK(p->clusters[0].workers == 8);
  CHECK(p->clusters[0].nodes.size() == 2);
}

TEST_CASE("Spread puts workers in as many racks as it can", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  AddNodes(s, "c1", 8, 2, 2);  // 4 racks of 2 nodes
  Gang g = GpuGang("ns/spread", 4);
  g.strategy = Strategy::kSpread;
  g.topology_key = kRackLabel;
  auto p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(Values(*p, &WorkerAssignment::domain).size() == 4);
  CHECK(Values(*p, &WorkerAssignment::node).size() == 4);

  g.replicas = 8;
  auto all = Place(g, s);
  REQUIRE(all.ok());
  std::map<std::string, int> per_rack;
  for (const auto& w : all->workers) ++per_rack[w.domain];
  CHECK(per_rack.size() == 4);
  for (const auto& [rack, n] : per_rack) CHECK(n == 2);

  // BinPack of the same gang over racks fills whole racks instead.
  g.strategy = Strategy::kBinPack;
  g.replicas = 4;
  auto packed = Place(g, s);
  REQUIRE(packed.ok());
  CHECK(Values(*packed, &WorkerAssignment::domain).size() == 2);
}

TEST_CASE("a gang that fits nowhere gets a reason naming the biggest free block", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("kiln-1"));
  s.UpsertCluster(Cluster("kiln-2"));
  // kiln-1: each NVLink domain has one node with 4 GPUs free; kiln-2/kiln-2-nvl-3
  // has 8.
  for (int i = 0; i < 2; ++i) {
    REQUIRE(s.UpsertNode("kiln-1", GpuNode("k1-" + std::to_string(i),
                                           "kiln-1-nvl-" + std::to_string(i), "r", "z"))
                .ok());
    REQUIRE(
        s.AddPod("kiln-1", "k1-" + std::to_string(i), "ns/x" + std::to_string(i), {4, 0, 0}).ok());
  }
  REQUIRE(s.UpsertNode("kiln-2", GpuNode("k2-0", "kiln-2-nvl-3", "r", "z")).ok());

  Gang g = GpuGang("ns/big", 2);
  g.require_single_domain = true;
  auto p = Place(g, s);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().code() == StatusCode::kResourceExhausted);
  CHECK(p.status().IsRetryable());
  CHECK(p.status().message() ==
        "gang ns/big needs 16 GPUs (2 workers x 8) of NVIDIA-H100-80GB-HBM3 in one NVLink "
        "domain; largest free: 8 in kiln-2/kiln-2-nvl-3");
  const PlacementFailure& f = FailureOf(p.status());
  CHECK(f.reason == "InsufficientCapacity");
  CHECK(f.needed_workers == 2);
  CHECK(f.largest_free_workers == 1);
  CHECK(f.largest_free_in == "kiln-2/kiln-2-nvl-3");

  // Without the single-domain rule the block is a cluster.
  Gang h = GpuGang("ns/huge", 3);
  auto q = Place(h, s);
  REQUIRE_FALSE(q.ok());
  CHECK(q.status().message() ==
        "gang ns/huge needs 24 GPUs (3 workers x 8) of NVIDIA-H100-80GB-HBM3 in one cluster; "
        "largest free: 8 in kiln-2");
}

TEST_CASE("reasons list the nodes left out and why", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  NodeInfo q = GpuNode("q", "nvl-0", "r", "z");
  q.quarantined = true;
  NodeInfo u = GpuNode("u", "nvl-0", "r", "z");
  u.schedulable = false;
  NodeInfo t = GpuNode("t", "nvl-0", "r", "z");
  t.taints = {{"dedicated", "infra", "NoSchedule"}};
  REQUIRE(s.UpsertNode("c1", q).ok());
  REQUIRE(s.UpsertNode("c1", u).ok());
  REQUIRE(s.UpsertNode("c1", t).ok());
  auto p = Place(GpuGang("ns/g", 1), s);
  REQUIRE_FALSE(p.ok());
  CHECK(p.status().message() ==
        "no node may take gang ns/g: 3 of 3 nodes skipped (1 quarantined, 1 unschedulable, 1 "
        "with untolerated taint dedicated=infra:NoSchedule)");
  CHECK(FailureOf(p.status()).reason == "NoEligibleNode");
}

TEST_CASE("the cluster selector picks clusters by their labels", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("us", {{"region", "us"}}));
  s.UpsertCluster(Cluster("eu", {{"region", "eu"}, {"tier", "prod"}}));
  AddNodes(s, "us", 4, 4, 4);
  AddNodes(s, "eu", 4, 4, 4);
  Gang g = GpuGang("ns/g", 2);
  g.cluster_selector.match_labels = {{"region", "eu"}};
  auto p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(Values(*p, &WorkerAssignment::cluster) == std::set<std::string>{"eu"});

  g.cluster_selector = {};
  g.cluster_selector.match_expressions = {{"region", "NotIn", {"eu"}}};
  p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(Values(*p, &WorkerAssignment::cluster) == std::set<std::string>{"us"});

  g.cluster_selector = {};
  g.cluster_selector.match_labels = {{"region", "ap"}};
  p = Place(g, s);
  REQUIRE_FALSE(p.ok());
  CHECK(FailureOf(p.status()).reason == "NoEligibleCluster");
  CHECK(p.status().message() ==
        "no member cluster may take gang ns/g: cluster eu not matching clusterSelector "
        "region=ap; cluster us not matching clusterSelector region=ap");
}

TEST_CASE("allowMultiCluster lets a gang span clusters only when no one cluster holds it",
          "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("a"));
  s.UpsertCluster(Cluster("b"));
  AddNodes(s, "a", 2, 2, 2);
  AddNodes(s, "b", 2, 2, 2);
  Gang g = GpuGang("ns/g", 3);
  auto off = Place(g, s);
  REQUIRE_FALSE(off.ok());
  CHECK(off.status().message() ==
        "gang ns/g needs 24 GPUs (3 workers x 8) of NVIDIA-H100-80GB-HBM3 in one cluster; "
        "largest free: 16 in a (allowMultiCluster is off; all clusters together have room for "
        "32)");

  g.allow_multi_cluster = true;
  auto on = Place(g, s);
  REQUIRE(on.ok());
  REQUIRE(on->clusters.size() == 2);
  CHECK(on->clusters[0].cluster == "a");
  CHECK(on->clusters[0].workers == 2);
  CHECK(on->clusters[1].workers == 1);
  // Ranks of one cluster are consecutive.
  CHECK(on->workers[0].cluster == "a");
  CHECK(on->workers[1].cluster == "a");
  CHECK(on->workers[2].cluster == "b");

  // A gang one cluster holds stays in one cluster even when allowed to span.
  g.replicas = 2;
  auto one = Place(g, s);
  REQUIRE(one.ok());
  CHECK(one->clusters.size() == 1);
}

TEST_CASE("quarantined nodes get no work, even from gangs that tolerate every taint",
          "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  NodeInfo flagged = GpuNode("n0", "nvl-0", "r", "z");
  flagged.quarantined = true;
  NodeInfo tainted = GpuNode("n1", "nvl-0", "r", "z");
  tainted.taints = {{kQuarantineTaint, "", "NoSchedule"}};
  REQUIRE(s.UpsertNode("c1", flagged).ok());
  REQUIRE(s.UpsertNode("c1", tainted).ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("n2", "nvl-0", "r", "z")).ok());
  Gang g = GpuGang("ns/g", 1);
  g.tolerations = {{"", "Exists", "", ""}};
  auto p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(p->workers[0].node == "n2");
  g.replicas = 2;
  auto q = Place(g, s);
  REQUIRE_FALSE(q.ok());
  CHECK_THAT(q.status().message(), Catch::Contains("2 quarantined"));

  // A node the job itself avoids (its own quarantine list, the last fault).
  g.replicas = 1;
  g.avoid_nodes = {"c1/n2"};
  auto r = Place(g, s);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(), Catch::Contains("1 avoided by the job"));
}

TEST_CASE("cordoned and unreachable clusters get no work", "[placement]") {
  Snapshot s;
  ClusterInfo cordoned = Cluster("a-cordoned");
  cordoned.cordoned = true;
  ClusterInfo lost = Cluster("b-lost");
  lost.reachable = false;
  s.UpsertCluster(cordoned);
  s.UpsertCluster(lost);
  s.UpsertCluster(Cluster("c-ok"));
  AddNodes(s, "a-cordoned", 2, 2, 2);
  AddNodes(s, "b-lost", 2, 2, 2);
  AddNodes(s, "c-ok", 1, 1, 1);
  auto p = Place(GpuGang("ns/g", 1), s);
  REQUIRE(p.ok());
  CHECK(p->workers[0].cluster == "c-ok");

  Gang two = GpuGang("ns/two", 2);
  two.allow_multi_cluster = true;
  auto q = Place(two, s);
  REQUIRE_FALSE(q.ok());
  CHECK_THAT(q.status().message(),
             Catch::EndsWith("cluster a-cordoned cordoned; cluster b-lost unreachable"));

  s.RemoveCluster("c-ok");
  auto r = Place(GpuGang("ns/g", 1), s);
  REQUIRE_FALSE(r.ok());
  CHECK(FailureOf(r.status()).reason == "NoEligibleCluster");
}

TEST_CASE("NoSchedule and NoExecute taints need a toleration, PreferNoSchedule does not",
          "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  NodeInfo infra = GpuNode("infra", "nvl-0", "r", "z");
  infra.taints = {{"dedicated", "infra", "NoSchedule"}};
  NodeInfo evict = GpuNode("evict", "nvl-1", "r", "z");
  evict.taints = {{"maintenance", "", "NoExecute"}};
  NodeInfo prefer = GpuNode("prefer", "nvl-2", "r", "z");
  prefer.taints = {{"spot", "true", "PreferNoSchedule"}};
  REQUIRE(s.UpsertNode("c1", infra).ok());
  REQUIRE(s.UpsertNode("c1", evict).ok());
  REQUIRE(s.UpsertNode("c1", prefer).ok());

  Gang g = GpuGang("ns/g", 3);
  g.strategy = Strategy::kSpread;
  CHECK_FALSE(Place(g, s).ok());
  g.replicas = 1;
  auto p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(p->workers[0].node == "prefer");

  g.replicas = 3;
  g.tolerations = {{"dedicated", "Equal", "infra", "NoSchedule"},
                   {"maintenance", "Exists", "", ""}};
  auto all = Place(g, s);
  REQUIRE(all.ok());
  CHECK(Values(*all, &WorkerAssignment::node).size() == 3);

  g.tolerations = {{"dedicated", "Equal", "other", "NoSchedule"}};
  g.replicas = 2;
  CHECK_FALSE(Place(g, s).ok());
  g.tolerations = {{"dedicated", "Equal", "infra", "NoExecute"}};  // wrong effect
  CHECK_FALSE(Place(g, s).ok());
}

TEST_CASE("the node selector narrows nodes (e.g. to a GPU product)", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  REQUIRE(s.UpsertNode("c1", GpuNode("h100", "nvl-0", "r", "z")).ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("h200", "nvl-1", "r", "z", 8, "NVIDIA-H200")).ok());
  Gang g = GpuGang("ns/g", 1);
  g.node_selector = {{kGpuProductLabel, "NVIDIA-H200"}};
  auto p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(p->workers[0].node == "h200");
  g.replicas = 2;
  auto q = Place(g, s);
  REQUIRE_FALSE(q.ok());
  CHECK_THAT(q.status().message(),
             Catch::StartsWith("gang ns/g needs 16 GPUs (2 workers x 8) of NVIDIA-H200 in one "
                               "cluster; largest free: 8 in c1; 1 of 2 nodes skipped (1 not "
                               "matching nodeSelector)"));
}

TEST_CASE("CPU workers (0 GPUs) are placed by CPU and memory", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  NodeInfo cpu;
  cpu.name = "cpu-0";
  cpu.allocatable = {0, 8000, 32 * testing::kGi};
  REQUIRE(s.UpsertNode("c1", cpu).ok());
  Gang g = GpuGang("ns/cpu", 4, 0);
  g.cpu_millis = 2000;
  g.memory_bytes = 8 * testing::kGi;
  auto p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(p->workers.size() == 4);
  CHECK(p->workers[0].domain.empty());  // no NVLink label
  g.replicas = 5;
  auto q = Place(g, s);
  REQUIRE_FALSE(q.ok());
  CHECK(q.status().message() ==
        "gang ns/cpu needs 5 CPU workers (2 CPU, 8Gi memory each) in one cluster; largest "
        "free: 4 workers in c1");
}

TEST_CASE("elastic gangs get the largest size in [min, max] that fits", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  AddNodes(s, "c1", 5, 5, 5);
  Gang g = GpuGang("ns/e", 1);
  g.elastic = ElasticPolicy{2, 8};
  auto p = Place(g, s);
  REQUIRE(p.ok());
  CHECK(p->replicas == 5);
  CHECK(p->workers.size() == 5);

  g.elastic = ElasticPolicy{2, 3};
  CHECK(Place(g, s)->replicas == 3);

  g.elastic = ElasticPolicy{6, 8};
  auto q = Place(g, s);
  REQUIRE_FALSE(q.ok());
  CHECK_THAT(q.status().message(),
             Catch::StartsWith("gang ns/e needs at least 48 GPUs (6 workers x 8)"));

  g.elastic = ElasticPolicy{4, 2};
  CHECK(Place(g, s).status().code() == StatusCode::kInvalidArgument);
  CHECK(FailureOf(Place(g, s).status()).reason == "InvalidGang");

  // Only sizes that split the global batch: with 8 micro-batches, 5 free
  // workers run 4 (not 5); needing at least 3 means needing 4.
  g.elastic = ElasticPolicy{.min_replicas = 1, .max_replicas = 8, .batch_units = 8};
  CHECK(Place(g, s)->replicas == 4);
  g.elastic = ElasticPolicy{.min_replicas = 3, .max_replicas = 8, .batch_units = 12};
  CHECK(Place(g, s)->replicas == 4);
  REQUIRE(
      s.UpsertNode("c1", testing::GpuNode("c1-gpu-5", "c1-nvl-5", "c1-rack-5", "c1-zone-a")).ok());
  CHECK(Place(g, s)->replicas == 6);
  g.elastic = ElasticPolicy{.min_replicas = 5, .max_replicas = 8, .batch_units = 32};
  auto r = Place(g, s);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(),
             Catch::StartsWith("gang ns/e needs at least 64 GPUs (8 workers"));
  g.elastic = ElasticPolicy{.min_replicas = 5, .max_replicas = 7, .batch_units = 32};
  CHECK(FailureOf(Place(g, s).status()).reason == "InvalidGang");
  CHECK_THAT(Place(g, s).status().message(),
             Catch::Contains("no size in [5, 7] divides the global batch"));
}

TEST_CASE("cluster priority and weight steer which cluster takes a gang", "[placement]") {
  Snapshot s;
  ClusterInfo low = Cluster("a-low");
  ClusterInfo high = Cluster("b-high");
  high.priority = 10;
  ClusterInfo zero = Cluster("c-zero");
  zero.priority = 100;
  zero.weight = 0;
  s.UpsertCluster(low);
  s.UpsertCluster(high);
  s.UpsertCluster(zero);
  AddNodes(s, "a-low", 2, 2, 2);
  AddNodes(s, "b-high", 2, 2, 2);
  AddNodes(s, "c-zero", 2, 2, 2);
  auto p = Place(GpuGang("ns/g", 1), s);
  REQUIRE(p.ok());
  CHECK(p->workers[0].cluster == "b-high");

  // Weight 0 takes work only when nothing else fits.
  s.RemoveCluster("a-low");
  s.RemoveCluster("b-high");
  auto q = Place(GpuGang("ns/g", 1), s);
  REQUIRE(q.ok());
  CHECK(q->workers[0].cluster == "c-zero");
}

TEST_CASE("Reserve holds a placement, Release frees it, a stale one holds nothing", "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  AddNodes(s, "c1", 2, 2, 2);
  auto p = Place(GpuGang("ns/g", 2), s);
  REQUIRE(p.ok());
  REQUIRE(Reserve(*p, s).ok());
  CHECK(s.cluster("c1")->free_gpus() == 0);
  CHECK(s.PodNode("c1", WorkerPodKey("ns/g", 1)) != nullptr);
  REQUIRE(Reserve(*p, s).ok());  // idempotent
  CHECK(s.cluster("c1")->free_gpus() == 0);

  auto other = Place(GpuGang("ns/h", 1), s);
  REQUIRE_FALSE(other.ok());

  REQUIRE(Release(*p, s).ok());
  CHECK(s.cluster("c1")->free_gpus() == 16);

  // A placement made on an older snapshot whose node filled up since.
  auto stale = Place(GpuGang("ns/h", 2), s);
  REQUIRE(stale.ok());
  REQUIRE(s.AddPod("c1", "c1-gpu-1", "ns/intruder", {1, 0, 0}).ok());
  Status r = Reserve(*stale, s);
  CHECK(r.code() == StatusCode::kAborted);
  CHECK(s.cluster("c1")->free_gpus() == 15);  // nothing of the stale placement held

  // A node quarantined, or the cluster cordoned, since the decision.
  REQUIRE(s.RemovePod("c1", "ns/intruder").ok());
  NodeInfo quarantined = s.cluster("c1")->node(s.cluster("c1")->nodes().at("c1-gpu-1"));
  quarantined.quarantined = true;
  REQUIRE(s.UpsertNode("c1", quarantined).ok());
  CHECK(Reserve(*stale, s).code() == StatusCode::kAborted);
  quarantined.quarantined = false;
  REQUIRE(s.UpsertNode("c1", quarantined).ok());
  ClusterInfo cordoned = Cluster("c1");
  cordoned.cordoned = true;
  s.UpsertCluster(cordoned);
  CHECK(Reserve(*stale, s).code() == StatusCode::kAborted);
  s.UpsertCluster(Cluster("c1"));
  CHECK(Reserve(*stale, s).ok());
}

TEST_CASE("a placement reserved under a holder is avoided by the next one on the same snapshot",
          "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  AddNodes(s, "c1", 2, 2, 2);
  auto first = Place(GpuGang("ns/a", 1), s);
  REQUIRE(first.ok());
  REQUIRE(Reserve(*first, "uid-a@0", s).ok());
  CHECK(s.PodNode("c1", WorkerPodKey("uid-a@0", 0)) != nullptr);
  CHECK(s.PodNode("c1", WorkerPodKey("ns/a", 0)) == nullptr);  // Keyed by the holder.
  auto second = Place(GpuGang("ns/b", 1), s);
  REQUIRE(second.ok());
  CHECK(second->workers[0].node != first->workers[0].node);
  // The same decision under another holder needs room of its own: none.
  CHECK(Reserve(*first, "uid-a@1", s).code() == StatusCode::kAborted);
  REQUIRE(Reserve(*second, "uid-b@0", s).ok());
  CHECK(s.cluster("c1")->free_gpus() == 0);
  REQUIRE(Release(*first, "uid-a@0", s).ok());
  CHECK(s.cluster("c1")->free_gpus() == 8);
  REQUIRE(Release(*second, "uid-b@0", s).ok());
  CHECK(s.cluster("c1")->free_gpus() == 16);
}

TEST_CASE("PlaceBatch goes by priority, then queue order, then name, reserving as it goes",
          "[placement]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  AddNodes(s, "c1", 4, 4, 4);  // room for 4 workers of 8 GPUs
  std::vector<Gang> gangs = {GpuGang("ns/low", 3), GpuGang("ns/high", 3), GpuGang("ns/small", 1),
                             GpuGang("ns/later", 1)};
  gangs[1].priority = 100;
  gangs[3].queue_order = 5;
  auto decisions = PlaceBatch(gangs, s);
  REQUIRE(decisions.size() == 4);
  CHECK(decisions[0].gang == "ns/high");
  CHECK(decisions[0].placement.ok());
  CHECK(decisions[1].gang == "ns/low");  // queue order 0, name before ns/small
  CHECK_FALSE(decisions[1].placement.ok());
  CHECK(decisions[2].gang == "ns/small");  // a smaller gang still uses what is left
  CHECK(decisions[2].placement.ok());
  CHECK(decisions[3].gang == "ns/later");
  CHECK_FALSE(decisions[3].placement.ok());
  CHECK(s.cluster("c1")->free_gpus() == 0);
}

TEST_CASE("PlaceBatch on a reader's copy leaves the master snapshot as it was", "[placement]") {
  Snapshot master;
  master.UpsertCluster(Cluster("c1"));
  AddNodes(master, "c1", 4, 2, 4);
  Snapshot copy = master;
  std::vector<Gang> gangs = {GpuGang("ns/a", 2), GpuGang("ns/b", 1)};
  auto decisions = PlaceBatch(gangs, copy);
  REQUIRE(decisions.size() == 2);
  CHECK(decisions[0].placement.ok());
  CHECK(decisions[1].placement.ok());
  CHECK(copy.cluster("c1")->free_gpus() == 8);
  CHECK(master.cluster("c1")->free_gpus() == 32);
  // The decision then goes to the master, as the TrainingJob controller does.
  REQUIRE(Reserve(*decisions[0].placement, master).ok());
  CHECK(master.cluster("c1")->free_gpus() == 16);
  // The pods' own informer events replace the reservations key by key.
  const WorkerAssignment& w = decisions[0].placement->workers[0];
  REQUIRE(master.AddPod("c1", w.node, WorkerPodKey("ns/a", 0), {8, 4000, 16 * testing::kGi}).ok());
  CHECK(master.cluster("c1")->free_gpus() == 16);
}

TEST_CASE("a Spread gang spanning clusters fills clusters in priority order", "[placement]") {
  Snapshot s;
  ClusterInfo high = Cluster("b-high");
  high.priority = 5;
  s.UpsertCluster(Cluster("a-low"));
  s.UpsertCluster(high);
  AddNodes(s, "a-low", 4, 1, 4);
  AddNodes(s, "b-high", 2, 1, 2);
  Gang g = GpuGang("ns/g", 5);
  g.strategy = Strategy::kSpread;
  g.allow_multi_cluster = true;
  auto p = Place(g, s);
  REQUIRE(p.ok());
  REQUIRE(p->clusters.size() == 2);
  CHECK(p->clusters[0].cluster == "b-high");
  CHECK(p->clusters[0].workers == 2);
  CHECK(p->clusters[1].workers == 3);
  CHECK(Values(*p, &WorkerAssignment::node).size() == 5);
}

// Builds the same fleet with nodes and clusters added in an order given by `seed`.
Snapshot ShuffledFleet(unsigned seed) {
  std::vector<std::pair<std::string, NodeInfo>> nodes;
  for (const std::string c : {"kiln-1", "kiln-2", "kiln-3"}) {
    for (int i = 0; i < 24; ++i) {
      nodes.emplace_back(
          c, GpuNode(c + "-gpu-" + std::to_string(i), c + "-nvl-" + std::to_string(i / 4),
                     c + "-rack-" + std::to_string(i / 8), c + "-zone-a"));
    }
  }
  std::vector<std::string> clusters = {"kiln-1", "kiln-2", "kiln-3"};
  std::mt19937 rng(seed);
  std::shuffle(nodes.begin(), nodes.end(), rng);
  std::shuffle(clusters.begin(), clusters.end(), rng);
  Snapshot s;
  for (const auto& c : clusters) s.UpsertCluster(Cluster(c));
  for (const auto& [c, n] : nodes) REQUIRE(s.UpsertNode(c, n).ok());
  // Some pods, in shuffled order too: every third node half full.
  std::vector<std::pair<std::string, std::string>> busy;
  for (const auto& [c, n] : nodes) {
    if (std::stoi(n.name.substr(n.name.rfind('-') + 1)) % 3 == 0) busy.emplace_back(c, n.name);
  }
  for (const auto& [c, n] : busy) REQUIRE(s.AddPod(c, n, "ns/" + n, {4, 0, 0}).ok());
  return s;
}

std::vector<Gang> MixedGangs() {
  std::vector<Gang> gangs;
  for (int i = 0; i < 30; ++i) {
    Gang g = GpuGang("ns/job-" + std::to_string(i), 1 + (i * 7) % 9, i % 4 == 0 ? 4 : 8);
    g.strategy = i % 3 == 0 ? Strategy::kSpread : Strategy::kBinPack;
    g.topology_key = i % 5 == 0 ? kRackLabel : kNvlinkDomainLabel;
    g.allow_multi_cluster = i % 2 == 0;
    g.priority = i % 3;
    gangs.push_back(g);
  }
  return gangs;
}

TEST_CASE("placement is deterministic: same input, shuffled input, same decisions", "[placement]") {
  Snapshot first = ShuffledFleet(1);
  Snapshot again = ShuffledFleet(1);
  Snapshot shuffled = ShuffledFleet(99);
  std::vector<Gang> gangs = MixedGangs();
  std::vector<Gang> reordered = gangs;
  std::mt19937 rng(7);
  std::shuffle(reordered.begin(), reordered.end(), rng);

  auto a = PlaceBatch(gangs, first);
  auto b = PlaceBatch(gangs, again);
  auto c = PlaceBatch(reordered, shuffled);
  REQUIRE(a.size() == b.size());
  REQUIRE(a.size() == c.size());
  int placed = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].gang);
    CHECK(a[i].gang == b[i].gang);
    CHECK(a[i].gang == c[i].gang);
    REQUIRE(a[i].placement.ok() == c[i].placement.ok());
    REQUIRE(a[i].placement.ok() == b[i].placement.ok());
    if (a[i].placement.ok()) {
      ++placed;
      CHECK(*a[i].placement == *b[i].placement);
      CHECK(*a[i].placement == *c[i].placement);
    } else {
      CHECK(a[i].placement.status() == c[i].placement.status());
    }
  }
  CHECK(placed > 10);
  CHECK(placed < 30);  // the fleet runs out: failures are compared too
}

}  // namespace
}  // namespace kiln::placement
