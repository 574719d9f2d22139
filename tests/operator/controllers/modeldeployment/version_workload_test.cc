// One version's Deployment and Service.
#include "operator/controllers/modeldeployment/version_workload.h"

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "operator/api/labels.h"
#include "operator/controllers/modeldeployment/quality_gate.h"
#include "operator/controllers/storage/s3_access.h"
#include "tests/support/pod_security.h"

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
  auto s3 = BuildVersionWorkload(Md(), {.version = "v2", .uri = "s3://b/k", .volume = vol});
  CHECK(s3.status().message() ==
        "model URI s3://b/k needs spec.storage.s3 (the store's endpoint and the Secret with its "
        "credentials)");
  CHECK_FALSE(
      BuildVersionWorkload(Md(), {.version = "v2", .uri = "file:///etc/x", .volume = vol}).ok());
  CHECK(BuildVersionWorkload(Md(), {.version = "v2", .uri = "file:///etc/x"}).ok());
}

v1::ModelDeployment S3Md() {
  v1::ModelDeployment md = Md();
  v1::S3Storage s3;
  s3.endpoint = "https://minio.storage:9000";
  s3.addressing_style = "Virtual";
  s3.credentials_secret_ref.name = "models-s3";
  md.spec.storage = v1::Storage{s3};
  md.spec.model.uri = "s3://models/chat/v2.ckpt";
  return md;
}

std::string Env(const json& container, const std::string& name) {
  for (const auto& e : container.value("env", json::array())) {
    if (e["name"] == name) return e["value"];
  }
  return "<unset>";
}

// The Secret volume and every container's mount and environment for S3, and
// no key of the Secret anywhere in the pod spec.
void CheckS3Access(const json& pod_spec, const std::string& secret) {
  bool volume = false;
  for (const auto& v : pod_spec["volumes"]) {
    if (v["name"] != s3access::kVolumeName) continue;
    volume = true;
    CHECK(v["secret"]["secretName"] == secret);
  }
  CHECK(volume);
  REQUIRE(!pod_spec["containers"].empty());
  for (const auto& c : pod_spec["containers"]) {
    INFO(c["name"]);
    CHECK(c["volumeMounts"].back() == json{{"name", s3access::kVolumeName},
                                           {"mountPath", s3access::kMountPath},
                                           {"readOnly", true}});
    CHECK(Env(c, "KILN_S3_CREDENTIALS_DIR") == s3access::kMountPath);
    CHECK(Env(c, "AWS_ENDPOINT_URL_S3") == "https://minio.storage:9000");
    CHECK(Env(c, "AWS_REGION") == "<unset>");  // The worker's default.
    CHECK(Env(c, "KILN_S3_ADDRESSING_STYLE") == "virtual");
    for (const auto& e : c["env"]) {
      CHECK_FALSE(e.contains("valueFrom"));
      CHECK(e["name"].get<std::string>().rfind("AWS_SECRET", 0) != 0);
      CHECK(e["name"] != "AWS_ACCESS_KEY_ID");
    }
  }
}

TEST_CASE("an s3:// model is served with the credentials Secret mounted, never in the env",
          "[modeldeployment][workload]") {
  auto w = BuildVersionWorkload(
      S3Md(), {.version = "v2",
               .uri = "s3://models/chat/v2.ckpt",
               .replicas = 1,
               .volume = {.claim_name = "ckpt", .host_path = "", .mount_path = "/checkpoints"}});
  INFO(w.status().ToString());
  REQUIRE(w.ok());
  const json& pod = w->deployment["spec"]["template"]["spec"];
  CHECK(pod["containers"][0]["args"][2] == "s3://models/chat/v2.ckpt");
  CheckS3Access(pod, "models-s3");
  // Without spec.storage.s3, nothing of it.
  auto plain = BuildVersionWorkload(Md(), {.version = "v2", .uri = "file:///m/v2", .replicas = 1});
  REQUIRE(plain.ok());
  const json& c = plain->deployment["spec"]["template"]["spec"]["containers"][0];
  CHECK(Env(c, "KILN_S3_CREDENTIALS_DIR") == "<unset>");
  for (const auto& v : plain->deployment["spec"]["template"]["spec"]["volumes"]) {
    CHECK(v["name"] != s3access::kVolumeName);
  }
}

TEST_CASE("the quality gate scores s3:// checkpoints, its evaluation set stays a file",
          "[modeldeployment][workload]") {
  v1::ModelDeployment md = S3Md();
  md.spec.analysis = v1::AnalysisSpec{};
  md.spec.analysis->quality_gate = v1::QualityGate{};
  md.spec.analysis->quality_gate->evaluation_set = "file:///checkpoints/eval.jsonl";
  const trainingjob::SharedVolume vol{
      .claim_name = "ckpt", .host_path = "", .mount_path = "/checkpoints"};
  auto job = BuildGateJob(md,
                          {.canary = "v2",
                           .canary_uri = "s3://models/chat/v2.ckpt",
                           .stable = "v1",
                           .stable_uri = "file:///checkpoints/chat/v1.ckpt"},
                          vol);
  INFO(job.status().ToString());
  REQUIRE(job.ok());
  const json& pod = (*job)["spec"]["template"]["spec"];
  const std::vector<std::string> canary = pod["containers"][0]["args"];
  CHECK(canary == std::vector<std::string>{"eval", "--data", "/checkpoints/eval.jsonl",
                                           "--checkpoint", "s3://models/chat/v2.ckpt", "--samples",
                                           "256", "--seed", "1", "--report",
                                           "/dev/termination-log"});
  CHECK(pod["containers"][1]["args"][4] == "/checkpoints/chat/v1.ckpt");
  CheckS3Access(pod, "models-s3");

  md.spec.analysis->quality_gate->evaluation_set = "s3://models/eval.jsonl";
  auto refused = BuildGateJob(md,
                              {.canary = "v2",
                               .canary_uri = "s3://models/chat/v2.ckpt",
                               .stable = "v1",
                               .stable_uri = "s3://models/chat/v1.ckpt"},
                              vol);
  CHECK(refused.status().message() ==
        "analysis.qualityGate.evaluationSet s3://models/eval.jsonl: kiln-worker eval reads its "
        "evaluation set from a file only; put it on the shared volume (file:///path)");
  md.spec.storage.reset();
  md.spec.analysis->quality_gate->evaluation_set = "file:///checkpoints/eval.jsonl";
  CHECK_FALSE(BuildGateJob(md,
                           {.canary = "v2",
                            .canary_uri = "s3://models/chat/v2.ckpt",
                            .stable = "v1",
                            .stable_uri = "file:///checkpoints/chat/v1.ckpt"},
                           vol)
                  .ok());
}

TEST_CASE("version names are DNS labels that do not collide", "[modeldeployment][workload]") {
  CHECK(VersionObjectName("chat", "v2") == "chat-v2");
  CHECK(VersionObjectName("chat", "V2.0") != VersionObjectName("chat", "v2-0"));
  CHECK(VersionObjectName("chat", "v2.0").size() <= 63);
  CHECK(VersionObjectName(std::string(60, 'a'), "step-100000").size() <= 63);
}

TEST_CASE("serving and gate pods meet the restricted Pod Security Standard with a claim",
          "[modeldeployment][workload][security]") {
  v1::ModelDeployment md = Md();
  md.spec.storage = v1::Storage{};
  md.spec.storage->s3 = v1::S3Storage{};
  md.spec.storage->s3->credentials_secret_ref.name = "models-s3";
  md.spec.analysis = v1::AnalysisSpec{};
  md.spec.analysis->quality_gate = v1::QualityGate{};
  md.spec.analysis->quality_gate->evaluation_set = "file:///checkpoints/eval.jsonl";
  const trainingjob::SharedVolume claim{
      .claim_name = "models", .host_path = "", .mount_path = "/checkpoints"};
  auto w = BuildVersionWorkload(
      md, {.version = "v2", .uri = "s3://models/chat/v2", .replicas = 1, .volume = claim});
  REQUIRE(w.ok());
  CHECK(testing::RestrictedViolations(w->deployment["spec"]["template"]["spec"]).empty());
  auto member = BuildVersionWorkload(md, {.version = "v2",
                                          .uri = "s3://models/chat/v2",
                                          .replicas = 1,
                                          .volume = claim,
                                          .in_member = true});
  REQUIRE(member.ok());
  CHECK(testing::RestrictedViolations(member->deployment["spec"]["template"]["spec"]).empty());
  auto job = BuildGateJob(md,
                          {.canary = "v2",
                           .canary_uri = "s3://models/chat/v2",
                           .stable = "v1",
                           .stable_uri = "file:///checkpoints/chat/v1"},
                          claim);
  REQUIRE(job.ok());
  const auto violations = testing::RestrictedViolations((*job)["spec"]["template"]["spec"]);
  INFO(json(violations).dump());
  CHECK(violations.empty());

  // A host path is what restricted (and baseline) refuses: the checker sees it.
  auto host = BuildVersionWorkload(
      Md(), {.version = "v2",
             .uri = "file:///checkpoints/chat/v2",
             .replicas = 1,
             .volume = {.claim_name = "", .host_path = "/srv", .mount_path = "/checkpoints"}});
  REQUIRE(host.ok());
  CHECK(testing::RestrictedViolations(host->deployment["spec"]["template"]["spec"]) ==
        std::vector<std::string>{"volume shared of a refused kind"});
}

}  // namespace
}  // namespace kiln::modeldeployment
