// DecideResize: a running gang against spec.workers.replicas and the fleet —
// shrink at once, grow only into room (the gang's own workers counting as
// free), to sizes that split the global batch, and why not when it cannot.
#include "operator/controllers/trainingjob/resize.h"

#include <catch2/catch.hpp>

#include "operator/placement/placement.h"
#include "tests/operator/placement/test_fleet.h"

namespace kiln::trainingjob {
namespace {

namespace v1 = api::v1alpha1;
using Catch::Contains;

constexpr const char* kHolder = "uid-1@0";

// Six 8-GPU nodes in cluster c1.
placement::Snapshot Fleet() {
  placement::Snapshot s;
  s.UpsertCluster(placement::testing::Cluster("c1"));
  placement::testing::AddNodes(s, "c1", 6, 6, 6);
  return s;
}

// A job asking for `replicas` 8-GPU workers, a global batch of 12
// micro-batches, elastic down to 1 when `elastic`.
v1::TrainingJob Job(int32_t replicas, bool elastic) {
  v1::TrainingJob job;
  job.metadata = {{"name", "gpt"}, {"namespace", "ml"}, {"uid", "uid-1"}};
  job.spec.workers.replicas = replicas;
  job.spec.workers.gpus_per_worker = 8;
  job.spec.training.global_batch_size = 96;
  job.spec.training.micro_batch_size = 8;
  if (elastic) job.spec.elastic = v1::ElasticPolicy{1, 12};
  return job;
}

// The gang running on the first `n` nodes, held in `fleet` as the capacity
// view holds a bound worker.
std::vector<RankPlacement> Running(placement::Snapshot& fleet, int n) {
  std::vector<RankPlacement> ranks;
  for (int r = 0; r < n; ++r) {
    const std::string node = "c1-gpu-" + std::to_string(r);
    ranks.push_back({"c1", node});
    REQUIRE(fleet.AddPod("c1", node, placement::WorkerPodKey(kHolder, r), {.gpus = 8}).ok());
  }
  return ranks;
}

// Another workload's pod on node `i`.
void Occupy(placement::Snapshot& fleet, int i) {
  REQUIRE(fleet
              .AddPod("c1", "c1-gpu-" + std::to_string(i), "other/pod-" + std::to_string(i),
                      {.gpus = 8})
              .ok());
}

TEST_CASE("a gang at the size asked for stays", "[trainingjob][resize]") {
  placement::Snapshot fleet = Fleet();
  auto ranks = Running(fleet, 2);
  for (bool elastic : {false, true}) {
    ResizeDecision d = DecideResize(Job(2, elastic), ranks, kHolder, fleet);
    CHECK(d.to == 0);
    CHECK(d.waiting.empty());
  }
}

TEST_CASE("a gang scaled down shrinks at once", "[trainingjob][resize]") {
  placement::Snapshot fleet = Fleet();
  auto ranks = Running(fleet, 4);
  for (bool elastic : {false, true}) {
    ResizeDecision d = DecideResize(Job(2, elastic), ranks, kHolder, fleet);
    CHECK(d.to == 2);
    CHECK(d.reason == "ScaleDown");
    CHECK_THAT(d.message, Contains("4 → 2 workers"));
  }
}

TEST_CASE("a gang below its size grows into the room the fleet has", "[trainingjob][resize]") {
  placement::Snapshot fleet = Fleet();
  auto ranks = Running(fleet, 2);
  Occupy(fleet, 5);
  // Elastic, asking for 6: nodes 0-4 are free once the gang stops, and 4 is
  // the largest size under 5 that splits 12 micro-batches.
  ResizeDecision d = DecideResize(Job(6, true), ranks, kHolder, fleet);
  CHECK(d.to == 4);
  CHECK(d.reason == "ScaleUp");
  CHECK_THAT(d.message, Contains("2 → 4 workers (6 asked for)"));
  // Not elastic: all 6 or nothing; the gang keeps running meanwhile.
  d = DecideResize(Job(6, false), ranks, kHolder, fleet);
  CHECK(d.to == 0);
  CHECK_THAT(d.waiting, Contains("runs 2 of the 6 workers asked for; no room for more yet"));
  CHECK_THAT(d.waiting, Contains("needs 48 GPUs"));
  // The fleet is a copy: the gang's own workers still count in the caller's.
  CHECK(fleet.cluster("c1")->free_gpus() == 24);
}

TEST_CASE("a gang with no room to grow keeps running and says why", "[trainingjob][resize]") {
  placement::Snapshot fleet = Fleet();
  auto ranks = Running(fleet, 2);
  for (int i : {2, 3, 4, 5}) Occupy(fleet, i);
  ResizeDecision d = DecideResize(Job(4, true), ranks, kHolder, fleet);
  CHECK(d.to == 0);
  CHECK_THAT(d.waiting, Contains("runs 2 of the 4 workers asked for"));
  CHECK_THAT(d.waiting, Contains("needs at least 24 GPUs"));
}

}  // namespace
}  // namespace kiln::trainingjob
