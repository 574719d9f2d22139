#include "operator/fleet/capacity_view.h"

#include <catch2/catch.hpp>

#include "operator/fleet/node_and_pod.h"
#include "tests/operator/fleet/test_objects.h"

namespace kiln::fleet {
namespace {

using testing::GpuNode;
using testing::GpuPod;

TEST_CASE("a Node object reads as placement's NodeInfo", "[fleet][capacity]") {
  nlohmann::json node = GpuNode("n1", "z-a", "r-0", "nvl-0");
  auto info = NodeInfoFromObject(node);
  REQUIRE(info.ok());
  CHECK(info->allocatable.gpus == 8);
  CHECK(info->allocatable.cpu_millis == 96000);
  CHECK(info->allocatable.memory_bytes == int64_t{1024} << 30);
  CHECK(info->schedulable);
  CHECK_FALSE(info->quarantined);
  CHECK(info->Label("kiln.dev/rack") == "r-0");

  node["spec"]["taints"] = {{{"key", "kiln.dev/quarantined"}, {"effect", "NoSchedule"}}};
  CHECK(NodeInfoFromObject(node)->quarantined);
  node["spec"]["unschedulable"] = true;
  CHECK_FALSE(NodeInfoFromObject(node)->schedulable);
  CHECK_FALSE(NodeInfoFromObject(GpuNode("n2", "z", "r", "n", 8, false))->schedulable);

  node["status"]["allocatable"]["cpu"] = "lots";
  CHECK(NodeInfoFromObject(node).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("a Pod's requests: limits stand in for absent requests, init containers by max",
          "[fleet][capacity]") {
  nlohmann::json pod = GpuPod("ns", "p", "n1", 4);
  auto r = PodRequests(pod);
  REQUIRE(r.ok());
  CHECK(r->gpus == 4);
  CHECK(r->cpu_millis == 500);
  pod["spec"]["initContainers"] = {
      {{"name", "init"}, {"resources", {{"requests", {{"cpu", "2"}}}}}}};
  CHECK(PodRequests(pod)->cpu_millis == 2000);
  CHECK(PodRequests(pod)->gpus == 4);
}

TEST_CASE("the capacity view aggregates GPUs by product, zone, rack and NVLink domain",
          "[fleet][capacity]") {
  CapacityView view;
  view.UpsertCluster({.name = "kiln-1"});
  view.OnNode("kiln-1", GpuNode("n0", "z-a", "r-0", "nvl-0"));
  view.OnNode("kiln-1", GpuNode("n1", "z-a", "r-0", "nvl-0"));
  view.OnNode("kiln-1", GpuNode("n2", "z-b", "r-1", "nvl-1"));
  nlohmann::json quarantined = GpuNode("n3", "z-b", "r-1", "nvl-1");
  quarantined["spec"]["taints"] = {{{"key", "kiln.dev/quarantined"}, {"effect", "NoSchedule"}}};
  view.OnNode("kiln-1", quarantined);
  view.OnPod("kiln-1", GpuPod("team", "bound", "n0", 6));
  view.OnPod("kiln-1", GpuPod("team", "pending", "", 8));
  view.OnNode("other", GpuNode("x0", "z", "r", "n"));  // Unknown cluster: dropped.

  ClusterCapacity c = view.Capacity("kiln-1");
  CHECK(c.node_count == 4);
  CHECK(c.schedulable_nodes == 4);
  CHECK(c.quarantined_nodes == 1);
  CHECK(c.total.nodes == 3);
  CHECK(c.total.gpus == 24);
  CHECK(c.total.free_gpus == 18);
  CHECK(c.by_product.at(testing::kH100).free_gpus == 18);
  CHECK(c.by_zone.at("z-a").gpus == 16);
  CHECK(c.by_zone.at("z-a").free_gpus == 10);
  CHECK(c.by_rack.at("r-1").nodes == 1);
  CHECK(c.by_nvlink_domain.at("nvl-1").free_gpus == 8);
  CHECK(c.pending_pods == 1);
  CHECK(c.pending_gpus == 8);

  SECTION("binding a pending pod moves it from pending to its node") {
    view.OnPod("kiln-1", GpuPod("team", "pending", "n2", 8));
    c = view.Capacity("kiln-1");
    CHECK(c.pending_pods == 0);
    CHECK(c.total.free_gpus == 10);
    CHECK(c.by_nvlink_domain.at("nvl-1").free_gpus == 0);
  }
  SECTION("a finished or deleted pod frees its GPUs; a deleted node leaves") {
    nlohmann::json done = GpuPod("team", "bound", "n0", 6);
    done["status"]["phase"] = "Succeeded";
    view.OnPod("kiln-1", done);
    CHECK(view.Capacity("kiln-1").total.free_gpus == 24);
    view.OnNodeDeleted("kiln-1", GpuNode("n2", "z-b", "r-1", "nvl-1"));
    c = view.Capacity("kiln-1");
    CHECK(c.total.gpus == 16);
    CHECK(c.node_count == 3);
  }
  SECTION("the snapshot placement reads holds the same figures; a removed cluster is gone") {
    placement::Snapshot s = view.Snapshot();
    REQUIRE(s.cluster("kiln-1") != nullptr);
    CHECK(s.cluster("kiln-1")->free_gpus() == 18);
    view.RemoveCluster("kiln-1");
    CHECK(view.Snapshot().cluster("kiln-1") == nullptr);
    CHECK(view.Capacity("kiln-1") == ClusterCapacity{});
    CHECK(s.cluster("kiln-1")->free_gpus() == 18);  // A held copy is unchanged.
  }
}

}  // namespace
}  // namespace kiln::fleet
