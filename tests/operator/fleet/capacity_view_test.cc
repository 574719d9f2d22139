#include "operator/fleet/capacity_view.h"

#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "operator/fleet/node_and_pod.h"
#include "tests/operator/fleet/test_objects.h"

namespace kiln::fleet {
namespace {

using testing::GpuNode;
using testing::GpuPod;
using testing::WorkerPod;

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

// A view of member "m1" with `nodes` nodes of 8 GPUs, n0, n1, ..., all in one
// NVLink domain.
void AddCluster(CapacityView& view, const std::string& cluster, int nodes) {
  view.UpsertCluster({.name = cluster});
  for (int i = 0; i < nodes; ++i) {
    view.OnNode(cluster, GpuNode("n" + std::to_string(i), "z-a", "r-0", "nvl-0"));
  }
}

placement::Gang Gang(const std::string& name, int32_t workers, int32_t gpus) {
  placement::Gang g;
  g.name = name;
  g.replicas = workers;
  g.gpus_per_worker = gpus;
  return g;
}

int64_t FreeGpus(const CapacityView& view, const std::string& cluster = "m1") {
  return view.Snapshot().cluster(cluster)->free_gpus();
}

// GPUs the view counts on a node (holds and pods), unclamped.
int64_t UsedGpus(const CapacityView& view, const std::string& cluster, const std::string& node) {
  const placement::Snapshot s = view.Snapshot();
  const auto* c = s.cluster(cluster);
  return c->used(c->nodes().at(node)).gpus;
}

TEST_CASE("two placements one after the other never count the same free GPUs",
          "[fleet][capacity][holds]") {
  CapacityView view;
  AddCluster(view, "m1", 2);
  auto a = view.PlaceAndHold(Gang("team/a", 1, 8), AttemptHolder("uid-a", 0));
  auto b = view.PlaceAndHold(Gang("team/b", 1, 8), AttemptHolder("uid-b", 0));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->workers[0].node != b->workers[0].node);
  CHECK(FreeGpus(view) == 0);
  CHECK(view.Capacity("m1").total.free_gpus == 0);  // MemberCluster status shows the holds too.
  CHECK(view.HeldRanks("team/a") == std::vector<int32_t>{0});

  auto c = view.PlaceAndHold(Gang("team/c", 1, 8), AttemptHolder("uid-c", 0));
  CHECK(c.status().code() == StatusCode::kResourceExhausted);
  CHECK(view.HeldRanks("team/c").empty());
}

TEST_CASE("a worker's bound pod replaces its rank's hold, counted once, the hold is then spent",
          "[fleet][capacity][holds]") {
  CapacityView view;
  AddCluster(view, "m1", 2);
  auto p = view.PlaceAndHold(Gang("team/a", 2, 4), AttemptHolder("uid-a", 0));
  REQUIRE(p.ok());
  const std::string node = p->workers[0].node;
  REQUIRE(p->workers[1].node == node);  // BinPack: both on one node.
  CHECK(FreeGpus(view) == 8);

  // Created, gated: not bound, so the hold still stands for it.
  view.OnPod("m1", WorkerPod("team", "uid-a", 0, 0, "", 4));
  CHECK(FreeGpus(view) == 8);
  CHECK(view.HeldRanks("team/a") == std::vector<int32_t>{0, 1});
  CHECK(view.Capacity("m1").pending_pods == 1);

  // Bound: the pod counts instead of the hold, not beside it.
  view.OnPod("m1", WorkerPod("team", "uid-a", 0, 0, node, 4));
  view.OnPod("m1", WorkerPod("team", "uid-a", 0, 0, node, 4));  // A relist counts once too.
  CHECK(FreeGpus(view) == 8);
  CHECK(UsedGpus(view, "m1", node) == 8);
  CHECK(view.HeldRanks("team/a") == std::vector<int32_t>{1});
  CHECK(view.Capacity("m1").pending_pods == 0);

  // Rank 1's pod deleted before it was bound: its hold stands.
  view.OnPod("m1", WorkerPod("team", "uid-a", 0, 1, "", 4));
  view.OnPodDeleted("m1", WorkerPod("team", "uid-a", 0, 1, "", 4));
  CHECK(FreeGpus(view) == 8);
  CHECK(view.HeldRanks("team/a") == std::vector<int32_t>{1});

  // Rank 0 ends: its GPUs are free, and its spent hold does not come back.
  nlohmann::json done = WorkerPod("team", "uid-a", 0, 0, node, 4);
  done["status"]["phase"] = "Succeeded";
  view.OnPod("m1", done);
  CHECK(FreeGpus(view) == 12);

  view.Release("team/a");
  CHECK(FreeGpus(view) == 16);
  CHECK(view.HeldRanks("team/a").empty());
}

TEST_CASE("a pod of an earlier attempt is never taken for the current attempt's",
          "[fleet][capacity][holds]") {
  CapacityView view;
  AddCluster(view, "m1", 2);
  auto first = view.PlaceAndHold(Gang("team/a", 1, 8), AttemptHolder("uid-a", 0));
  REQUIRE(first.ok());
  const std::string old_node = first->workers[0].node;
  view.OnPod("m1", WorkerPod("team", "uid-a", 0, 0, old_node, 8));

  // The gang restarts: attempt 0's pod is still terminating on its node.
  auto second = view.PlaceAndHold(Gang("team/a", 1, 8), AttemptHolder("uid-a", 1));
  REQUIRE(second.ok());
  const std::string new_node = second->workers[0].node;
  CHECK(new_node != old_node);
  CHECK(FreeGpus(view) == 0);
  // Attempt 0's pod, seen again, does not spend attempt 1's hold.
  view.OnPod("m1", WorkerPod("team", "uid-a", 0, 0, old_node, 8));
  CHECK(view.HeldRanks("team/a") == std::vector<int32_t>{0});
  // Gone: its node is free; attempt 1's hold stands.
  view.OnPodDeleted("m1", WorkerPod("team", "uid-a", 0, 0, old_node, 8));
  CHECK(UsedGpus(view, "m1", old_node) == 0);
  CHECK(UsedGpus(view, "m1", new_node) == 8);
  // Attempt 1's own pod replaces it.
  view.OnPod("m1", WorkerPod("team", "uid-a", 1, 0, new_node, 8));
  CHECK(UsedGpus(view, "m1", new_node) == 8);
  CHECK(view.HeldRanks("team/a").empty());
}

TEST_CASE("an abandoned attempt's holds go: on Release, and when the job places again",
          "[fleet][capacity][holds]") {
  CapacityView view;
  AddCluster(view, "m1", 2);
  REQUIRE(view.PlaceAndHold(Gang("team/a", 1, 8), AttemptHolder("uid-a", 0)).ok());
  CHECK(FreeGpus(view) == 8);
  // Placed again (a new attempt, or the same after a failed status write):
  // the earlier decision no longer holds anything.
  REQUIRE(view.PlaceAndHold(Gang("team/a", 1, 8), AttemptHolder("uid-a", 1)).ok());
  CHECK(FreeGpus(view) == 8);
  // The earlier attempt's pod, made before it was abandoned, is deleted
  // unbound: nothing of it stays.
  view.OnPodDeleted("m1", WorkerPod("team", "uid-a", 0, 0, "", 8));
  CHECK(FreeGpus(view) == 8);
  view.Release("team/a");
  CHECK(FreeGpus(view) == 16);
  view.Release("team/a");  // Nothing held: a no-op.
  view.Release("team/never");
  CHECK(FreeGpus(view) == 16);
  // A refused placement holds nothing, and drops what the job held.
  REQUIRE(view.PlaceAndHold(Gang("team/a", 1, 8), AttemptHolder("uid-a", 2)).ok());
  CHECK(view.PlaceAndHold(Gang("team/a", 3, 8), AttemptHolder("uid-a", 3)).status().code() ==
        StatusCode::kResourceExhausted);
  CHECK(FreeGpus(view) == 16);
}

TEST_CASE("holds rebuilt from a decision: bound ranks count by their pods, a reconnect keeps them",
          "[fleet][capacity][holds]") {
  // A new operator: the informer has listed rank 0's bound pod; rank 1's pod
  // does not exist yet. The job's status.placement says n0 and n1.
  CapacityView view;
  AddCluster(view, "m1", 3);
  view.OnPod("m1", WorkerPod("team", "uid-a", 2, 0, "n0", 8));
  const std::vector<WorkerHold> placement = {{"m1", "n0", {8, 0, 0}}, {"m1", "n1", {8, 0, 0}}};
  view.Hold("team/a", AttemptHolder("uid-a", 2), placement);
  CHECK(view.HeldRanks("team/a") == std::vector<int32_t>{1});
  CHECK(UsedGpus(view, "m1", "n0") == 8);                     // Once, by the pod.
  CHECK(UsedGpus(view, "m1", "n1") == 8);                     // By the hold.
  view.Hold("team/a", AttemptHolder("uid-a", 2), placement);  // Held again: the same.
  CHECK(UsedGpus(view, "m1", "n0") == 8);
  CHECK(UsedGpus(view, "m1", "n1") == 8);

  // The next placement goes around both.
  auto b = view.PlaceAndHold(Gang("team/b", 1, 8), AttemptHolder("uid-b", 0));
  REQUIRE(b.ok());
  CHECK(b->workers[0].node == "n2");

  // The member reconnects (a rotated kubeconfig): its nodes and pods are
  // listed again, and the holds on it count again at once.
  view.RemoveCluster("m1");
  view.UpsertCluster({.name = "m1"});
  for (const char* n : {"n0", "n1", "n2"}) view.OnNode("m1", GpuNode(n, "z-a", "r-0", "nvl-0"));
  CHECK(UsedGpus(view, "m1", "n0") == 0);  // Its pod is not listed yet.
  CHECK(UsedGpus(view, "m1", "n1") == 8);
  CHECK(UsedGpus(view, "m1", "n2") == 8);
  view.OnPod("m1", WorkerPod("team", "uid-a", 2, 0, "n0", 8));
  CHECK(FreeGpus(view) == 0);
}

TEST_CASE("placements made on several threads at once never overcommit a node",
          "[fleet][capacity][holds]") {
  // 2 clusters × 8 nodes × 8 GPUs = 128 GPUs, asked for by 8 threads × 12
  // gangs of 1-3 workers × 2, 4 or 8 GPUs (about 7 times what there is);
  // a third of the gangs see their pods bound at once (the informer), a
  // fifth are abandoned, while another thread keeps reading the view.
  CapacityView view;
  AddCluster(view, "a", 8);
  AddCluster(view, "b", 8);
  struct Decided {
    placement::Placement placement;
    bool released = false;
  };
  constexpr int kThreads = 8, kGangs = 12;
  std::vector<std::vector<Decided>> decided(kThreads);
  // Catch's assertions are not thread-safe: the threads count, the test checks.
  std::atomic<bool> done{false};
  std::atomic<int> overcommitted{0}, other_errors{0}, reads{0}, refused{0};
  std::thread reader([&] {
    while (!done) {
      const placement::Snapshot s = view.Snapshot();
      for (const auto& [name, c] : s.clusters()) {
        for (const auto& [node, slot] : c.nodes()) overcommitted += c.used(slot).gpus > 8 ? 1 : 0;
      }
      ++reads;
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t + 1));
      for (int i = 0; i < kGangs; ++i) {
        const std::string uid = "uid-" + std::to_string(t) + "-" + std::to_string(i);
        placement::Gang g =
            Gang("team/" + uid, 1 + static_cast<int32_t>(rng() % 3), int32_t{2} << (rng() % 3));
        auto p = view.PlaceAndHold(g, AttemptHolder(uid, 0));
        if (!p.ok()) {
          (p.status().code() == StatusCode::kResourceExhausted ? refused : other_errors) += 1;
          continue;
        }
        Decided d{*p};
        if (i % 3 == 0) {
          for (size_t r = 0; r < p->workers.size(); ++r) {
            view.OnPod(p->workers[r].cluster, WorkerPod("team", uid, 0, static_cast<int>(r),
                                                        p->workers[r].node, g.gpus_per_worker));
          }
        } else if (i % 5 == 1) {
          view.Release(g.name);
          d.released = true;
        }
        decided[static_cast<size_t>(t)].push_back(std::move(d));
      }
    });
  }
  for (auto& th : threads) th.join();
  done = true;
  reader.join();
  CHECK(overcommitted == 0);
  CHECK(other_errors == 0);
  CHECK(reads > 0);

  // What the decisions still standing put on each node fits it, and is
  // exactly what the view counts there.
  std::map<std::pair<std::string, std::string>, int64_t> expected;
  size_t placed = 0;
  for (const auto& per_thread : decided) {
    for (const Decided& d : per_thread) {
      ++placed;
      if (d.released) continue;
      for (const auto& w : d.placement.workers) {
        expected[{w.cluster, w.node}] += d.placement.per_worker.gpus;
      }
    }
  }
  CHECK(placed >= 10);
  CHECK(refused > 0);  // The fleet was fought over.
  const placement::Snapshot s = view.Snapshot();
  for (const auto& [name, c] : s.clusters()) {
    for (const auto& [node, slot] : c.nodes()) {
      INFO(name << "/" << node);
      CHECK(expected[{name, node}] <= 8);
      CHECK(c.used(slot).gpus == expected[{name, node}]);
    }
  }
}

}  // namespace
}  // namespace kiln::fleet
