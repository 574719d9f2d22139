#include "operator/placement/snapshot.h"

#include <catch2/catch.hpp>

#include "tests/operator/placement/test_fleet.h"

namespace kiln::placement {
namespace {

using testing::Cluster;
using testing::GpuNode;
using testing::kGi;

int64_t FreeGpus(const Snapshot& s, const std::string& cluster, const std::string& node) {
  auto free = s.Free(cluster, node);
  REQUIRE(free.ok());
  return free->gpus;
}

int64_t DomainFree(const Snapshot& s, const std::string& cluster, const std::string& key,
                   const std::string& value) {
  const Snapshot::Cluster* c = s.cluster(cluster);
  REQUIRE(c != nullptr);
  const int k = c->KeyIndex(key);
  REQUIRE(k >= 0);
  auto id = c->FindDomain(static_cast<size_t>(k), value);
  if (!id) return 0;
  return c->domain_free_gpus(static_cast<size_t>(k), *id);
}

const Resources kWorker{2, 1000, 8 * kGi};

TEST_CASE("snapshot: pods hold resources on their node and in the domain sums",
          "[placement][snapshot]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  REQUIRE(s.UpsertNode("c1", GpuNode("n1", "nvl-0", "rack-0", "z")).ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("n2", "nvl-0", "rack-0", "z")).ok());
  CHECK(s.cluster("c1")->free_gpus() == 16);
  CHECK(DomainFree(s, "c1", kNvlinkDomainLabel, "nvl-0") == 16);

  REQUIRE(s.AddPod("c1", "n1", "ns/p1", kWorker).ok());
  CHECK(FreeGpus(s, "c1", "n1") == 6);
  CHECK(s.Free("c1", "n1")->cpu_millis == 95000);
  CHECK(DomainFree(s, "c1", kNvlinkDomainLabel, "nvl-0") == 14);
  CHECK(DomainFree(s, "c1", kRackLabel, "rack-0") == 14);
  CHECK(s.cluster("c1")->free_gpus() == 14);

  // The same key again (an informer's add after Reserve, a relist) counts once.
  REQUIRE(s.AddPod("c1", "n1", "ns/p1", kWorker).ok());
  CHECK(FreeGpus(s, "c1", "n1") == 6);
  // A key moved to another node moves its resources.
  REQUIRE(s.AddPod("c1", "n2", "ns/p1", kWorker).ok());
  CHECK(FreeGpus(s, "c1", "n1") == 8);
  CHECK(FreeGpus(s, "c1", "n2") == 6);

  REQUIRE(s.RemovePod("c1", "ns/p1").ok());
  REQUIRE(s.RemovePod("c1", "ns/p1").ok());  // deletes are idempotent
  CHECK(FreeGpus(s, "c1", "n2") == 8);
  CHECK(s.cluster("c1")->free_gpus() == 16);
}

TEST_CASE("snapshot: unknown clusters are NotFound, unknown nodes NotFound on read",
          "[placement][snapshot]") {
  Snapshot s;
  CHECK(s.UpsertNode("nope", GpuNode("n", "a", "b", "c")).code() == StatusCode::kNotFound);
  CHECK(s.AddPod("nope", "n", "k", kWorker).code() == StatusCode::kNotFound);
  CHECK(s.RemovePod("nope", "k").ok());
  s.UpsertCluster(Cluster("c1"));
  CHECK(s.Free("c1", "n").status().code() == StatusCode::kNotFound);
  CHECK(s.RemoveNode("c1", "n").ok());
}

TEST_CASE("snapshot: a pod seen before its node is applied when the node comes",
          "[placement][snapshot]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  REQUIRE(s.AddPod("c1", "n1", "ns/early", kWorker).ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("n1", "nvl-0", "rack-0", "z")).ok());
  CHECK(FreeGpus(s, "c1", "n1") == 6);
  CHECK(s.cluster("c1")->free_gpus() == 6);

  // A removed node's pods wait for it (or for their own deletes).
  REQUIRE(s.RemoveNode("c1", "n1").ok());
  CHECK(s.cluster("c1")->free_gpus() == 0);
  REQUIRE(s.UpsertNode("c1", GpuNode("n1", "nvl-0", "rack-0", "z")).ok());
  CHECK(FreeGpus(s, "c1", "n1") == 6);
  REQUIRE(s.RemoveNode("c1", "n1").ok());
  REQUIRE(s.RemovePod("c1", "ns/early").ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("n1", "nvl-0", "rack-0", "z")).ok());
  CHECK(FreeGpus(s, "c1", "n1") == 8);
}

TEST_CASE("snapshot: node updates move domains and drop unschedulable nodes from the sums",
          "[placement][snapshot]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  REQUIRE(s.UpsertNode("c1", GpuNode("n1", "nvl-0", "rack-0", "z")).ok());
  REQUIRE(s.AddPod("c1", "n1", "ns/p", kWorker).ok());

  NodeInfo moved = GpuNode("n1", "nvl-1", "rack-0", "z");
  REQUIRE(s.UpsertNode("c1", moved).ok());
  CHECK(DomainFree(s, "c1", kNvlinkDomainLabel, "nvl-0") == 0);
  CHECK_FALSE(s.cluster("c1")->FindDomain(0, "nvl-0"));  // emptied domains go
  CHECK(s.cluster("c1")->domain_order(0).size() == 1);
  CHECK(DomainFree(s, "c1", kNvlinkDomainLabel, "nvl-1") == 6);
  CHECK(FreeGpus(s, "c1", "n1") == 6);  // its pods stay

  moved.schedulable = false;
  REQUIRE(s.UpsertNode("c1", moved).ok());
  CHECK(DomainFree(s, "c1", kNvlinkDomainLabel, "nvl-1") == 0);
  CHECK(s.cluster("c1")->free_gpus() == 0);
  moved.schedulable = true;
  moved.quarantined = true;
  REQUIRE(s.UpsertNode("c1", moved).ok());
  CHECK(s.cluster("c1")->free_gpus() == 0);
  moved.quarantined = false;
  REQUIRE(s.UpsertNode("c1", moved).ok());
  CHECK(s.cluster("c1")->free_gpus() == 6);
}

TEST_CASE("snapshot: nodes without an indexed label are grouped under the empty value",
          "[placement][snapshot]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  NodeInfo bare = GpuNode("bare", "x", "y", "z");
  bare.labels.erase(kNvlinkDomainLabel);
  REQUIRE(s.UpsertNode("c1", bare).ok());
  CHECK(DomainFree(s, "c1", kNvlinkDomainLabel, "") == 8);
}

TEST_CASE("snapshot: copies are independent (copy-on-write per cluster)", "[placement][snapshot]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  s.UpsertCluster(Cluster("c2"));
  REQUIRE(s.UpsertNode("c1", GpuNode("n1", "nvl-0", "rack-0", "z")).ok());
  REQUIRE(s.UpsertNode("c2", GpuNode("m1", "nvl-0", "rack-0", "z")).ok());

  Snapshot copy = s;
  REQUIRE(s.AddPod("c1", "n1", "ns/p", kWorker).ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("n2", "nvl-0", "rack-0", "z")).ok());
  REQUIRE(copy.AddPod("c2", "m1", "ns/q", kWorker).ok());

  CHECK(FreeGpus(s, "c1", "n1") == 6);
  CHECK(FreeGpus(copy, "c1", "n1") == 8);
  CHECK(copy.Free("c1", "n2").status().code() == StatusCode::kNotFound);
  CHECK(FreeGpus(s, "c2", "m1") == 8);
  CHECK(FreeGpus(copy, "c2", "m1") == 6);
  CHECK(DomainFree(copy, "c1", kNvlinkDomainLabel, "nvl-0") == 8);
  CHECK(DomainFree(s, "c1", kNvlinkDomainLabel, "nvl-0") == 14);
}

TEST_CASE("snapshot: capacity by GPU product for MemberCluster status", "[placement][snapshot]") {
  Snapshot s;
  s.UpsertCluster(Cluster("c1"));
  REQUIRE(s.UpsertNode("c1", GpuNode("h1", "nvl-0", "r", "z")).ok());
  REQUIRE(s.UpsertNode("c1", GpuNode("h2", "nvl-0", "r", "z", 8, "NVIDIA-H200")).ok());
  NodeInfo bad = GpuNode("h3", "nvl-1", "r", "z");
  bad.quarantined = true;
  REQUIRE(s.UpsertNode("c1", bad).ok());
  REQUIRE(s.AddPod("c1", "h1", "ns/p", kWorker).ok());

  const Capacity all = s.ClusterCapacity("c1");
  CHECK(all.nodes == 2);
  CHECK(all.gpus == 16);
  CHECK(all.free_gpus == 14);
  CHECK(all.quarantined == 1);
  auto by = s.CapacityBy("c1", kGpuProductLabel);
  REQUIRE(by.size() == 2);
  CHECK(by[testing::kH100].nodes == 1);
  CHECK(by[testing::kH100].free_gpus == 6);
  CHECK(by[testing::kH100].quarantined == 1);
  CHECK(by["NVIDIA-H200"].free_gpus == 8);
}

}  // namespace
}  // namespace kiln::placement
