// One version's Deployment and Service.
#include "operator/controllers/modeldeployment/version_workload.h"

#include <catch2/catch.hpp>

#include "operator/api/labels.h"

namespace kiln::modeldeployment {
namespace {

namespace v1 = api::v1alpha1;
using nlohmann::json;

v1::ModelDeployment Md() {
  v1::ModelDeployment md;
  md.metadata = {{"name", "chat"}, {"namespace", "serving"}, {"uid", "u-1"}};
  md.spec.model = {"chat-model", "v2", "file:///models/v2"};
  md.spec.image = "kiln-worker:1";
  md.spec.gpus_per_replica = 1;
  md.spec.serving = v1::ServingOptions{.port = 9000, .max_batch_size = 8};
  return md;
}

TEST_CASE("a version's Deployment serves its checkpoint with the spec's options",
          "[modeldeployment][workload]") {
  auto w = BuildVersionWorkload(
      Md(), {.version = "v2",
             .uri = "file:///checkpoints/chat/v2",
             .replicas = 3,
             .volume = {.claim_name = "", .host_path = "/srv/ckpt", .mount_path = "/checkpoints"}});
  REQUIRE(w.ok());
  const json& d = w->deployment;
  CHECK(d["metadata"]["name"] == "chat-v2");
  CHECK(d["spec"]["replicas"] == 3);
  CHECK(d["metadata"]["ownerReferences"][0]["uid"] == "u-1");
  const json& c = d["spec"]["template"]["spec"]["containers"][0];
  const std::vector<std::string> args = c["args"];
  const std::vector<std::string> want = {"serve",
                                         "--checkpoint",
                                         "/checkpoints/chat/v2",
                                         "--bind",
                                         ":9000",
                                         "--model-name",
                                         "chat-model",
                                         "--model-version",
                                         "v2",
                                         "--max-running",
                                         "8",
                                         "--max-queue",
                                         "256",
                                         "--device",
                                         "cuda"};
  CHECK(args == want);
  CHECK(c["resources"]["limits"]["nvidia.com/gpu"] == 1);
  CHECK(c["ports"][0]["name"] == "http");
  CHECK(c["readinessProbe"]["httpGet"]["path"] == "/readyz");
  CHECK(d["spec"]["template"]["spec"]["volumes"][1]["hostPath"]["path"] == "/srv/ckpt");
  const json& svc = w->service;
  CHECK(svc["metadata"]["labels"][api::kModelDeploymentLabel] == "chat");
  CHECK(svc["metadata"]["labels"][api::kModelVersionLabel] == "v2");
  CHECK(svc["spec"]["ports"][0]["name"] == "http");
  CHECK(svc["spec"]["ports"][0]["port"] == 9000);
  CHECK(svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]);
}

TEST_CASE("what no worker can serve is refused", "[modeldeployment][workload]") {
  const trainingjob::SharedVolume vol{
      .claim_name = "ckpt", .host_path = "", .mount_path = "/checkpoints"};
  CHECK_FALSE(BuildVersionWorkload(Md(), {.version = "v2", .uri = "s3://b/k", .volume = vol}).ok());
  CHECK_FALSE(
      BuildVersionWorkload(Md(), {.version = "v2", .uri = "file:///etc/x", .volume = vol}).ok());
  CHECK(BuildVersionWorkload(Md(), {.version = "v2", .uri = "file:///etc/x"}).ok());
}

TEST_CASE("version names are DNS labels that do not collide", "[modeldeployment][workload]") {
  CHECK(VersionObjectName("chat", "v2") == "chat-v2");
  CHECK(VersionObjectName("chat", "V2.0") != VersionObjectName("chat", "v2-0"));
  CHECK(VersionObjectName("chat", "v2.0").size() <= 63);
  CHECK(VersionObjectName(std::string(60, 'a'), "step-100000").size() <= 63);
}

}  // namespace
}  // namespace kiln::modeldeployment
