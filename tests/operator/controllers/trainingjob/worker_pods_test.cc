// The gang's objects from examples/trainingjob.yaml and a placement: one
// gated, node-pinned, restricted pod per rank with the rendezvous env and the
// train flags the spec implies; one headless Service per member cluster;
// names that stay DNS labels; and what the schema cannot check refused with
// the field named.
#include "operator/controllers/trainingjob/worker_pods.h"

#include <set>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "operator/controllers/storage/s3_access.h"
#include "tests/support/pod_security.h"
#include "tests/support/yaml_json.h"

namespace kiln::trainingjob {
namespace {

namespace v1 = api::v1alpha1;
using Catch::Contains;
using nlohmann::json;

v1::TrainingJob Example() {
  auto text = ReadFile(std::string(KILN_SOURCE_DIR) + "/examples/trainingjob.yaml");
  REQUIRE(text.ok());
  auto docs = testing::YamlDocumentsToJson(*text);
  REQUIRE(docs.ok());
  REQUIRE(docs->size() == 1);
  v1::TrainingJob job = (*docs)[0].get<v1::TrainingJob>();
  job.metadata["uid"] = "6f1c0d2e-1111-2222-3333-444455556666";
  return job;
}

WorkerPodOptions Options() {
  WorkerPodOptions o;
  o.volume.claim_name = "kiln-shared";
  o.volume.mount_path = "/checkpoints";
  return o;
}

std::string Env(const json& container, const std::string& name) {
  for (const auto& e : container.value("env", json::array())) {
    if (e["name"] == name) return e["value"];
  }
  return "<unset>";
}

bool HasArg(const json& container, const std::string& arg) {
  for (const auto& a : container["args"]) {
    if (a == arg) return true;
  }
  return false;
}

TEST_CASE("the example job's gang: gated, pinned pods with the rendezvous and train flags",
          "[trainingjob][pods]") {
  v1::TrainingJob job = Example();
  auto gang = BuildGang(job, {{"kiln-1", "gpu-a"}, {"kiln-1", "gpu-b"}}, Options());
  INFO(gang.status().ToString());
  REQUIRE(gang.ok());
  REQUIRE(gang->pods.size() == 2);
  CHECK(gang->pod_clusters == std::vector<std::string>{"kiln-1", "kiln-1"});
  for (int rank = 0; rank < 2; ++rank) {
    INFO("rank " << rank);
    const json& pod = gang->pods[static_cast<size_t>(rank)];
    CHECK(pod["metadata"]["name"] == "fortunes-gpt-0-" + std::to_string(rank));
    CHECK(pod["metadata"]["namespace"] == "default");
    CHECK(pod["metadata"]["labels"][kJobUidLabel] == "6f1c0d2e-1111-2222-3333-444455556666");
    CHECK(pod["metadata"]["labels"][kRankLabel] == std::to_string(rank));
    CHECK_FALSE(pod["metadata"].contains("ownerReferences"));  // Not the job's cluster.
    const json& spec = pod["spec"];
    CHECK(spec["schedulingGates"] == json::array({{{"name", "kiln.dev/gang"}}}));
    CHECK_FALSE(spec.contains("nodeName"));  // The member's scheduler binds.
    const json& term =
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
    CHECK(term["matchFields"][0]["values"] == json::array({rank == 0 ? "gpu-a" : "gpu-b"}));
    CHECK(spec["restartPolicy"] == "Never");
    CHECK(spec["hostname"] == pod["metadata"]["name"]);
    CHECK(spec["subdomain"] == "fortunes-gpt");
    CHECK(spec["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3");
    CHECK(spec["tolerations"][0]["key"] == "nvidia.com/gpu");
    CHECK(spec["securityContext"]["runAsNonRoot"] == true);
    CHECK(spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    const json& prepare = spec["initContainers"][0];
    CHECK(prepare["args"] == json::array({"prepare", "--input", "/usr/share/games/fortunes",
                                          "--output", "/scratch/data"}));
    const json& worker = spec["containers"][0];
    CHECK(worker["name"] == kWorkerContainer);
    CHECK(worker["image"] == "ghcr.io/kiln-dev/kiln-worker:0.1.0-cuda");
    CHECK(Env(worker, "RANK") == std::to_string(rank));
    CHECK(Env(worker, "WORLD_SIZE") == "2");
    CHECK(Env(worker, "MASTER_ADDR") == "fortunes-gpt-0-0.fortunes-gpt.default.svc");
    CHECK(Env(worker, "MASTER_PORT") == "29500");
    CHECK(Env(worker, "NCCL_DEBUG") == "WARN");  // The spec's own env.
    // 64 sequences a step = 8 per pass x 2 workers x 4 accumulated passes.
    for (const char* arg :
         {"train", "--grad-accum=4", "--batch=8", "--seq=512", "--layers=12", "--heads=12",
          "--channels=768", "--steps=5000", "--checkpoint-dir=/checkpoints/fortunes-gpt",
          "--checkpoint-every=200", "--checkpoint-keep=3", "--seed=1337", "--lr=0.0006",
          "--warmup=200", "--device=auto", "--data=/scratch/data/manifest.json",
          "--fence=6f1c0d2e-1111-2222-3333-444455556666:0"}) {
      INFO(arg);
      CHECK(HasArg(worker, arg));
    }
    CHECK(worker["resources"]["limits"]["nvidia.com/gpu"] == 8);
    CHECK(worker["resources"]["requests"]["cpu"] == "16");
    CHECK(worker["terminationMessagePath"] == "/dev/termination-log");
    CHECK(worker["securityContext"]["allowPrivilegeEscalation"] == false);
    CHECK(worker["securityContext"]["readOnlyRootFilesystem"] == true);
    CHECK(worker["securityContext"]["capabilities"]["drop"] == json::array({"ALL"}));
    CHECK(spec["volumes"][1]["persistentVolumeClaim"]["claimName"] == "kiln-shared");
  }
  REQUIRE(gang->services.size() == 1);
  const json& svc = gang->services[0];
  CHECK(svc["metadata"]["name"] == "fortunes-gpt");
  CHECK(svc["spec"]["clusterIP"] == "None");
  CHECK(svc["spec"]["publishNotReadyAddresses"] == true);
  CHECK(svc["spec"]["selector"][kAttemptLabel] == "0");
}

TEST_CASE("worker pods meet the restricted Pod Security Standard with a claim",
          "[trainingjob][pods][security]") {
  auto gang = BuildGang(Example(), {{"kiln-1", "gpu-a"}, {"kiln-2", "gpu-b"}}, Options());
  REQUIRE(gang.ok());
  for (const json& pod : gang->pods) {
    const auto violations = testing::RestrictedViolations(pod["spec"]);
    INFO(pod["metadata"]["name"] << ": " << json(violations).dump());
    CHECK(violations.empty());
  }
}

TEST_CASE("a restart attempt gets new names, and the job's own cluster gets owner references",
          "[trainingjob][pods]") {
  v1::TrainingJob job = Example();
  WorkerPodOptions o = Options();
  o.attempt = 3;
  o.same_cluster_as_job = true;
  o.volume = {.claim_name = "", .host_path = "/var/lib/kiln", .mount_path = "/checkpoints"};
  auto gang = BuildGang(job, {{"hub", "n1"}, {"kiln-2", "n9"}}, o);
  REQUIRE(gang.ok());
  CHECK(gang->pods[1]["metadata"]["name"] == "fortunes-gpt-3-1");
  // The fence token names the attempt (worker/train/fence.h).
  CHECK(HasArg(gang->pods[1]["spec"]["containers"][0],
               "--fence=6f1c0d2e-1111-2222-3333-444455556666:3"));
  CHECK(Env(gang->pods[1]["spec"]["containers"][0], "MASTER_ADDR") ==
        "fortunes-gpt-3-0.fortunes-gpt.default.svc");
  CHECK(gang->pods[0]["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob");
  CHECK(gang->pods[0]["metadata"]["ownerReferences"][0]["uid"] == job.metadata["uid"]);
  CHECK(gang->pods[0]["spec"]["volumes"][1]["hostPath"]["path"] == "/var/lib/kiln");
  CHECK(gang->service_clusters == std::vector<std::string>{"hub", "kiln-2"});
}

TEST_CASE("the attempt after a LossDiverged restart rewinds, and no other does",
          "[trainingjob][pods]") {
  v1::TrainingJob job = Example();
  WorkerPodOptions o = Options();
  o.attempt = 2;
  auto args = [&]() {
    auto gang = BuildGang(job, {{"hub", "n1"}, {"hub", "n2"}}, o);
    REQUIRE(gang.ok());
    std::vector<std::string> found;
    for (const auto& pod : gang->pods) {
      const json& c = pod["spec"]["containers"][0];
      std::vector<std::string> mine;
      for (const std::string flag : {"--rewind-before-step=", "--skip-data-through-step="}) {
        for (const auto& a : c["args"]) {
          if (a.get<std::string>().rfind(flag, 0) == 0) mine.push_back(a);
        }
      }
      if (!found.empty()) CHECK(mine == found);  // Every rank alike.
      found = mine;
    }
    return found;
  };
  CHECK(args().empty());  // No status.
  job.status.emplace();
  job.status->restarts = 2;
  v1::RestartRecord earlier{.time = "2027-01-15T07:00:00.000Z", .reason = "GPUFault"};
  v1::RestartRecord diverged{.time = "2027-01-15T08:00:00.500Z", .reason = "LossDiverged"};
  diverged.failed_at_step = 1234;
  diverged.rewind_before_step = 1200;
  job.status->restart_history = {earlier, diverged};
  CHECK(args() ==
        std::vector<std::string>{"--rewind-before-step=1200", "--skip-data-through-step=1234"});
  // Without a failed step, nothing to skip.
  job.status->restart_history->back().failed_at_step.reset();
  CHECK(args() == std::vector<std::string>{"--rewind-before-step=1200"});
  job.status->restart_history->back().failed_at_step = 1234;
  // A suspension before the restart does not matter; one since (in the same
  // second too) means this attempt rewound already: resume without.
  v1::Condition suspended{.type = "Suspended", .status = "False"};
  suspended.last_transition_time = "2027-01-15T07:59:59Z";
  job.status->conditions = {suspended};
  CHECK(args().size() == 2);
  job.status->conditions->back().last_transition_time = "2027-01-15T08:00:00Z";
  CHECK(args().empty());
  job.status->conditions.reset();
  // Pods of another attempt than the one the record started, or a later
  // restart of another reason: no rewind.
  o.attempt = 3;
  CHECK(args().empty());
  job.status->restarts = 3;
  job.status->restart_history->push_back({.time = "2027-01-15T09:00:00Z", .reason = "NodeFailure"});
  CHECK(args().empty());
}

TEST_CASE("a CPU job asks for no GPU and trains on the CPU", "[trainingjob][pods]") {
  v1::TrainingJob job = Example();
  job.spec.workers.gpus_per_worker = 0;
  auto gang = BuildGang(job, {{"c", "n"}, {"c", "m"}}, Options());
  REQUIRE(gang.ok());
  const json& worker = gang->pods[0]["spec"]["containers"][0];
  CHECK(HasArg(worker, "--device=cpu"));
  CHECK_FALSE(worker["resources"]["limits"].contains("nvidia.com/gpu"));
}

TEST_CASE("what the schema cannot check is refused naming the field", "[trainingjob][pods]") {
  auto refused = [](v1::TrainingJob job, std::vector<RankPlacement> placement,
                    WorkerPodOptions o = Options()) {
    auto gang = BuildGang(job, placement, o);
    REQUIRE_FALSE(gang.ok());
    CHECK(gang.status().code() == StatusCode::kInvalidArgument);
    return gang.status().message();
  };
  const std::vector<RankPlacement> two = {{"c", "a"}, {"c", "b"}};
  v1::TrainingJob job = Example();
  // The placement sizes the gang: a gang placed before `kubectl scale` keeps
  // its size (and its accumulation) until it is resized.
  job.spec.workers.replicas = 1;
  auto four = BuildGang(job, {{"c", "a"}, {"c", "b"}, {"c", "d"}, {"c", "e"}}, Options());
  REQUIRE(four.ok());
  REQUIRE(four->pods.size() == 4);
  CHECK_THAT(four->pods[3].dump(), Contains("--grad-accum=2"));
  CHECK_THAT(four->pods[3].dump(), Contains(R"({"name":"WORLD_SIZE","value":"4"})"));
  job = Example();
  job.spec.training.global_batch_size = 60;
  CHECK_THAT(refused(job, two), Contains("spec.training.globalBatchSize: 60 is not a multiple"));
  job = Example();
  job.spec.checkpoint.uri = "file:///elsewhere/ckpt";
  CHECK_THAT(refused(job, two), Contains("outside the shared volume mounted at /checkpoints"));
  job.spec.checkpoint.uri = "file:///checkpoints-other/x";  // A prefix is not a parent.
  CHECK_THAT(refused(job, two), Contains("spec.checkpoint.uri"));
  job.spec.checkpoint.uri = "s3://bucket/ckpt";
  CHECK_THAT(refused(job, two), Contains("spec.checkpoint.uri: s3://bucket/ckpt needs "
                                         "spec.storage.s3"));
  job = Example();
  job.spec.data.uri = "s3://bucket/data";
  CHECK_THAT(refused(job, two), Contains("spec.data.uri: s3://bucket/data needs spec.storage.s3"));
  // file:// checkpoints need the shared volume.
  CHECK_THAT(refused(Example(), two, WorkerPodOptions{}),
             Contains("spec.checkpoint.uri: file:///checkpoints/fortunes-gpt is a file:// URI, but "
                      "kiln-operator has no shared volume"));
  job = Example();
  job.spec.data.uri = "relative/path";
  CHECK_THAT(refused(job, two), Contains("spec.data.uri"));
  WorkerPodOptions both = Options();
  both.volume.host_path = "/x";
  CHECK_THAT(refused(Example(), two, both), Contains("exactly one"));
  // Elastic jobs (the example: 1..4 workers) may run at any size in their bounds.
  job = Example();
  job.spec.training.global_batch_size = 32;
  CHECK(BuildGang(job, {{"c", "a"}, {"c", "b"}, {"c", "d"}, {"c", "e"}}, Options()).ok());
  CHECK_THAT(refused(job, {{"c", "a"}, {"c", "b"}, {"c", "d"}}),
             Contains("globalBatchSize: 32 is not a multiple of microBatchSize (8) x 3 workers"));
}

// The example with its data and checkpoints in S3.
v1::TrainingJob S3Example() {
  v1::TrainingJob job = Example();
  v1::S3Storage s3;
  s3.endpoint = "http://seaweedfs.storage:8333";
  s3.region = "eu-west-1";
  s3.addressing_style = "Path";
  s3.credentials_secret_ref.name = "s3-creds";
  job.spec.storage = v1::Storage{s3};
  job.spec.data.uri = "s3://corpora/fortunes";
  job.spec.checkpoint.uri = "s3://checkpoints/fortunes-gpt";
  return job;
}

json Volume(const json& pod, const std::string& name) {
  for (const auto& v : pod["spec"]["volumes"]) {
    if (v["name"] == name) return v;
  }
  return nullptr;
}

TEST_CASE("with spec.storage.s3 the workers mount the credentials Secret and get the store",
          "[trainingjob][pods]") {
  WorkerPodOptions o;  // No shared volume: nothing is on files.
  o.credentials_secrets["kiln-2"] = CredentialsCopyName("fortunes-gpt");
  auto gang = BuildGang(S3Example(), {{"kiln-1", "gpu-a"}, {"kiln-2", "gpu-b"}}, o);
  INFO(gang.status().ToString());
  REQUIRE(gang.ok());
  for (int rank = 0; rank < 2; ++rank) {
    INFO("rank " << rank);
    const json& pod = gang->pods[static_cast<size_t>(rank)];
    // The hub's own Secret on kiln-1, kiln's copy on kiln-2.
    const json volume = Volume(pod, s3access::kVolumeName);
    REQUIRE(volume.is_object());
    CHECK(volume["secret"]["secretName"] ==
          (rank == 0 ? "s3-creds" : "fortunes-gpt-s3-credentials"));
    CHECK(Volume(pod, "shared").is_null());
    // Prepared data is read from S3: nothing to prepare.
    CHECK_FALSE(pod["spec"].contains("initContainers"));
    const json& worker = pod["spec"]["containers"][0];
    CHECK(HasArg(worker, "--data=s3://corpora/fortunes/manifest.json"));
    CHECK(HasArg(worker, "--checkpoint-dir=s3://checkpoints/fortunes-gpt"));
    CHECK(worker["volumeMounts"].back() == json{{"name", s3access::kVolumeName},
                                                {"mountPath", s3access::kMountPath},
                                                {"readOnly", true}});
    CHECK(Env(worker, "KILN_S3_CREDENTIALS_DIR") == s3access::kMountPath);
    CHECK(Env(worker, "AWS_ENDPOINT_URL_S3") == "http://seaweedfs.storage:8333");
    CHECK(Env(worker, "AWS_REGION") == "eu-west-1");
    CHECK(Env(worker, "KILN_S3_ADDRESSING_STYLE") == "path");
    // The keys are never in the pod spec, neither as values nor as references.
    for (const auto& e : worker["env"]) {
      CHECK_FALSE(e.contains("valueFrom"));
      CHECK(e["name"] != "AWS_ACCESS_KEY_ID");
      CHECK(e["name"] != "AWS_SECRET_ACCESS_KEY");
      CHECK(e["name"] != "AWS_SESSION_TOKEN");
    }
  }
  // A manifest named as such is used as it is; file:// data is still
  // prepared by each rank, and mounts the Secret too.
  v1::TrainingJob job = S3Example();
  job.spec.data.uri = "s3://corpora/fortunes/v2.json";
  auto named = BuildGang(job, {{"kiln-1", "a"}, {"kiln-1", "b"}}, o);
  REQUIRE(named.ok());
  CHECK(HasArg(named->pods[0]["spec"]["containers"][0], "--data=s3://corpora/fortunes/v2.json"));
  job.spec.data.uri = "file:///usr/share/games/fortunes";
  auto prepared = BuildGang(job, {{"kiln-1", "a"}, {"kiln-1", "b"}}, o);
  REQUIRE(prepared.ok());
  const json& init = prepared->pods[0]["spec"]["initContainers"][0];
  CHECK(init["args"][2] == "/usr/share/games/fortunes");
  CHECK(Env(init, "KILN_S3_CREDENTIALS_DIR") == s3access::kMountPath);
}

TEST_CASE("without spec.storage.s3 no pod holds anything of S3", "[trainingjob][pods]") {
  auto gang = BuildGang(Example(), {{"kiln-1", "gpu-a"}, {"kiln-1", "gpu-b"}}, Options());
  REQUIRE(gang.ok());
  for (const json& pod : gang->pods) {
    CHECK(Volume(pod, s3access::kVolumeName).is_null());
    CHECK(Volume(pod, "shared").is_object());
    for (const char* list : {"initContainers", "containers"}) {
      for (const auto& c : pod["spec"][list]) {
        CHECK(Env(c, "KILN_S3_CREDENTIALS_DIR") == "<unset>");
        CHECK(Env(c, "AWS_ENDPOINT_URL_S3") == "<unset>");
        for (const auto& m : c["volumeMounts"]) CHECK(m["name"] != s3access::kVolumeName);
      }
    }
  }
}

TEST_CASE("kiln's copy of the credentials Secret for a member: the data, the job's labels",
          "[trainingjob][pods]") {
  const json secret = {
      {"apiVersion", "v1"},
      {"kind", "Secret"},
      {"metadata",
       {{"name", "s3-creds"},
        {"namespace", "default"},
        {"uid", "u-1"},
        {"resourceVersion", "7"},
        {"annotations", {{"kubectl.kubernetes.io/last-applied-configuration", "{}"}}},
        {"ownerReferences", json::array({{{"name", "x"}}})}}},
      {"type", "Opaque"},
      {"data", {{"AWS_ACCESS_KEY_ID", "QUtJRA=="}, {"AWS_SECRET_ACCESS_KEY", "c2s="}}}};
  const json copy = BuildCredentialsCopy(S3Example(), secret);
  CHECK(copy["metadata"]["name"] == "fortunes-gpt-s3-credentials");
  CHECK(copy["metadata"]["namespace"] == "default");
  CHECK(copy["metadata"]["labels"] == json{{"app.kubernetes.io/managed-by", "kiln"},
                                           {kJobNameLabel, "fortunes-gpt"},
                                           {kJobUidLabel, "6f1c0d2e-1111-2222-3333-444455556666"}});
  CHECK_FALSE(copy["metadata"]["labels"].contains(kAttemptLabel));  // Outlives attempts.
  CHECK(copy["data"] == secret["data"]);
  CHECK(copy["type"] == "Opaque");
  CHECK_FALSE(copy["metadata"].contains("ownerReferences"));
  CHECK_FALSE(copy["metadata"].contains("annotations"));
  CHECK_FALSE(copy["metadata"].contains("resourceVersion"));
  CHECK(s3access::CopyCurrent(copy, copy));
  json rotated = secret;
  rotated["data"]["AWS_SECRET_ACCESS_KEY"] = "bmV3";
  CHECK_FALSE(s3access::CopyCurrent(copy, BuildCredentialsCopy(S3Example(), rotated)));
}

TEST_CASE("names stay DNS labels, distinct for distinct long names", "[trainingjob][pods]") {
  CHECK(DnsLabel("fortunes-gpt", "-0-1") == "fortunes-gpt-0-1");
  CHECK(DnsLabel("9lives.v2", "") == "j9lives-v2");
  CHECK(DnsLabel("Big_Job", "-1-0") == "big-job-1-0");
  const std::string a(100, 'a');
  const std::string b = a + "b";
  const std::string la = DnsLabel(a, "-12-345"), lb = DnsLabel(b, "-12-345");
  CHECK(la.size() <= 63);
  CHECK(lb.size() <= 63);
  CHECK(la != lb);
  CHECK(la.ends_with("-12-345"));
  CHECK(DnsLabel(a, "-12-345") == la);  // Stable.
  CHECK(WorkerPodName(a, 0, 7).size() <= 63);
}

}  // namespace
}  // namespace kiln::trainingjob
