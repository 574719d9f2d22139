#include "operator/placement/trainingjob_gang.h"

#include <catch2/catch.hpp>

namespace kiln::placement {
namespace {

TEST_CASE("FromTrainingJob maps spec and status onto a Gang", "[placement][adapter]") {
  api::v1alpha1::TrainingJob job;
  job.metadata = {{"name", "gpt"}, {"namespace", "ml"}};
  job.spec.workers.replicas = 4;
  job.spec.workers.gpus_per_worker = 2;
  job.spec.workers.resources = api::v1alpha1::ResourceRequirements{
      std::map<std::string, nlohmann::json>{{"cpu", "1500m"}, {"memory", "64Gi"}}, std::nullopt};
  job.spec.workers.node_selector = std::map<std::string, std::string>{{kGpuProductLabel, "H"}};
  job.spec.workers.tolerations = std::vector<api::v1alpha1::Toleration>{
      {"dedicated", "Equal", "ml", "NoSchedule", std::nullopt}};
  api::v1alpha1::Placement p;
  p.strategy = "Spread";
  p.topology_key = kRackLabel;
  p.allow_multi_cluster = true;
  p.cluster_selector =
      api::v1alpha1::LabelSelector{std::map<std::string, std::string>{{"region", "eu"}},
                                   std::vector<api::v1alpha1::LabelSelectorRequirement>{
                                       {"tier", "In", std::vector<std::string>{"a", "b"}}}};
  job.spec.placement = p;
  job.spec.elastic = api::v1alpha1::ElasticPolicy{2, 8};
  job.spec.training.global_batch_size = 48;
  job.spec.training.micro_batch_size = 4;
  api::v1alpha1::TrainingJobStatus status;
  status.quarantined_nodes = std::vector<std::string>{"kiln-1/kiln-1-gpu-3"};
  job.status = status;

  auto g = FromTrainingJob(job, 7);
  REQUIRE(g.ok());
  CHECK(g->name == "ml/gpt");
  CHECK(g->replicas == 4);
  REQUIRE(g->elastic);
  CHECK(g->elastic->min_replicas == 2);
  // Elastic gangs are sized from workers.replicas down (kubectl scale moves
  // it within maxReplicas), at sizes that split the global batch's 12
  // micro-batches evenly.
  CHECK(g->elastic->max_replicas == 4);
  CHECK(g->elastic->batch_units == 12);
  CHECK(g->elastic->Allows(4));
  CHECK(g->elastic->Allows(3));
  CHECK_FALSE(g->elastic->Allows(5));
  CHECK_FALSE(g->elastic->Allows(1));
  CHECK(g->gpus_per_worker == 2);
  CHECK(g->cpu_millis == 1500);
  CHECK(g->memory_bytes == 64 * (int64_t{1} << 30));
  CHECK(g->node_selector.at(kGpuProductLabel) == "H");
  REQUIRE(g->tolerations.size() == 1);
  CHECK(g->tolerations[0].value == "ml");
  CHECK(g->strategy == Strategy::kSpread);
  CHECK(g->topology_key == kRackLabel);
  CHECK(g->allow_multi_cluster);
  CHECK(g->cluster_selector.Matches({{"region", "eu"}, {"tier", "b"}}));
  CHECK_FALSE(g->cluster_selector.Matches({{"region", "eu"}, {"tier", "c"}}));
  CHECK(g->avoid_nodes == std::vector<std::string>{"kiln-1/kiln-1-gpu-3"});
  CHECK(g->priority == 7);
}

TEST_CASE("FromTrainingJob applies the API defaults", "[placement][adapter]") {
  api::v1alpha1::TrainingJob job;
  job.metadata = {{"name", "j"}, {"namespace", "ns"}};
  job.spec.workers.replicas = 1;
  auto g = FromTrainingJob(job);
  REQUIRE(g.ok());
  CHECK(g->gpus_per_worker == 8);
  CHECK(g->strategy == Strategy::kBinPack);
  CHECK(g->topology_key == kNvlinkDomainLabel);
  CHECK_FALSE(g->allow_multi_cluster);
  CHECK(g->cluster_selector.empty());
}

TEST_CASE("quantities parse as Kubernetes writes them", "[placement][adapter]") {
  CHECK(*ParseMilliQuantity("500m") == 500);
  CHECK(*ParseMilliQuantity("4") == 4000);
  CHECK(*ParseMilliQuantity("1.5") == 1500);
  CHECK(*ParseMilliQuantity(2) == 2000);
  CHECK(*ParseMilliQuantity("1Ki") == 1024000);
  CHECK(*ParseMilliQuantity("1G") == 1000000000000);
  CHECK(*ParseMilliQuantity("1e3") == 1000000);
  CHECK(ParseMilliQuantity("12x").status().code() == StatusCode::kInvalidArgument);
  CHECK(ParseMilliQuantity("").status().code() == StatusCode::kInvalidArgument);
  CHECK(ParseMilliQuantity(nlohmann::json::array()).status().code() ==
        StatusCode::kInvalidArgument);

  api::v1alpha1::TrainingJob job;
  job.spec.workers.replicas = 1;
  job.spec.workers.resources = api::v1alpha1::ResourceRequirements{
      std::map<std::string, nlohmann::json>{{"cpu", "lots"}}, std::nullopt};
  auto g = FromTrainingJob(job);
  REQUIRE_FALSE(g.ok());
  CHECK(g.status().message() == "spec.workers.resources.requests.cpu: \"lots\" is not a quantity");
}

}  // namespace
}  // namespace kiln::placement
