// The generated kiln.dev/v1alpha1 types against the CRDs they were generated
// with: every example decodes and re-encodes unchanged, an instance with every
// field the CRD schema has survives a round trip (so no schema field is
// missing from the types), and decoding errors name the field.
#include <filesystem>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "operator/api/codec.h"
#include "operator/api/v1alpha1/membercluster.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/api/v1alpha1/trainingjob.h"
#include "tests/support/yaml_json.h"

namespace kiln::api::v1alpha1 {
namespace {

using nlohmann::json;

json LoadOne(const std::string& relative) {
  auto text = ReadFile(std::string(KILN_SOURCE_DIR) + "/" + relative);
  REQUIRE(text.ok());
  auto docs = kiln::testing::YamlDocumentsToJson(*text);
  REQUIRE(docs.ok());
  REQUIRE(docs->size() == 1);
  return docs->front();
}

// A value for `schema` with every property set: the first enum value, the
// minimum, one map entry, one list item.
json Sample(const json& schema, const std::string& path) {
  if (schema.value("x-kubernetes-int-or-string", false)) return "1";
  if (schema.contains("enum")) return schema["enum"][0];
  std::string type = schema.value("type", "");
  if (type == "object") {
    json o = json::object();
    if (schema.contains("properties")) {
      for (const auto& [name, sub] : schema["properties"].items()) {
        o[name] = Sample(sub, path + "." + name);
      }
    } else if (schema.contains("additionalProperties")) {
      o["key"] = Sample(schema["additionalProperties"], path + "{}");
    }
    return o;
  }
  if (type == "array") return json::array({Sample(schema["items"], path + "[]")});
  if (type == "integer") return schema.value("minimum", 0) + 1;
  if (type == "number") return 0.25;
  if (type == "boolean") return true;
  if (type == "string") {
    if (schema.value("format", "") == "date-time") return "2026-11-22T10:00:00Z";
    return "s-" + path.substr(path.rfind('.') + 1);
  }
  FAIL("no sample for " << path << ": " << schema.dump());
  return nullptr;
}

json CrdSchema(const std::string& plural) {
  json crd = LoadOne("crds/kiln.dev_" + plural + ".yaml");
  return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
}

template <class T>
void CheckRoundTrip(const json& object) {
  auto decoded = Decode<T>(object);
  REQUIRE(decoded.ok());
  json encoded = Encode(*decoded);
  INFO("diff: " << json::diff(object, encoded).dump());
  CHECK(encoded == object);
  // And once more through the C++ value: equal objects, equal encodings.
  auto again = Decode<T>(encoded);
  REQUIRE(again.ok());
  CHECK(*again == *decoded);
}

TEST_CASE("every example decodes and re-encodes unchanged", "[api]") {
  CheckRoundTrip<TrainingJob>(LoadOne("examples/trainingjob.yaml"));
  CheckRoundTrip<ModelDeployment>(LoadOne("examples/modeldeployment.yaml"));
  CheckRoundTrip<TrainingJob>(LoadOne("examples/trainingjob-s3.yaml"));
  CheckRoundTrip<ModelDeployment>(LoadOne("examples/modeldeployment-s3.yaml"));
  CheckRoundTrip<ModelDeployment>(LoadOne("examples/modeldeployment-mirror.yaml"));
  CheckRoundTrip<MemberCluster>(LoadOne("examples/membercluster.yaml"));
  CheckRoundTrip<MemberCluster>(LoadOne("examples/membercluster-hub.yaml"));
}

TEST_CASE("every field of every CRD schema has a home in the C++ types", "[api]") {
  for (const auto& [plural, kind] :
       {std::pair{"trainingjobs", "TrainingJob"}, std::pair{"modeldeployments", "ModelDeployment"},
        std::pair{"memberclusters", "MemberCluster"}}) {
    INFO(kind);
    json sample = Sample(CrdSchema(plural), "");
    sample["apiVersion"] = "kiln.dev/v1alpha1";
    sample["kind"] = kind;
    sample["metadata"] = {{"name", "full"}};
    if (std::string(kind) == "TrainingJob") CheckRoundTrip<TrainingJob>(sample);
    if (std::string(kind) == "ModelDeployment") CheckRoundTrip<ModelDeployment>(sample);
    if (std::string(kind) == "MemberCluster") CheckRoundTrip<MemberCluster>(sample);
  }
}

TEST_CASE("decoding errors name the field", "[api]") {
  json job = LoadOne("examples/trainingjob.yaml");
  json bad = job;
  bad["spec"]["workers"]["replicas"] = "three";
  auto r = Decode<TrainingJob>(bad);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message() == "spec.workers.replicas: type must be number, but is string");

  bad = job;
  bad["spec"]["model"].erase("layers");
  CHECK(Decode<TrainingJob>(bad).status().message() == "spec.model.layers: required");

  bad = job;
  bad["spec"]["failurePolicy"]["rules"][1]["onExitCodes"] = "two";
  CHECK(Decode<TrainingJob>(bad).status().message().rfind(
            "spec.failurePolicy.rules.onExitCodes: expected an object (ExitCodeMatch)", 0) == 0);

  bad = LoadOne("examples/trainingjob-s3.yaml");
  bad["spec"]["storage"]["s3"].erase("credentialsSecretRef");
  CHECK(Decode<TrainingJob>(bad).status().message() ==
        "spec.storage.s3.credentialsSecretRef: required");

  CHECK(!Decode<MemberCluster>(json::array()).ok());
}

TEST_CASE("spec.storage.s3 reads into the shared Storage type for both kinds", "[api]") {
  auto job = Decode<TrainingJob>(LoadOne("examples/trainingjob-s3.yaml"));
  REQUIRE(job.ok());
  REQUIRE(job->spec.storage);
  REQUIRE(job->spec.storage->s3);
  const S3Storage& s3 = *job->spec.storage->s3;
  CHECK(s3.endpoint == "http://seaweedfs.storage.svc:8333");
  CHECK(s3.region == "us-east-1");
  CHECK(s3.addressing_style == "Path");
  CHECK(s3.credentials_secret_ref.name == "s3-credentials");
  auto md = Decode<ModelDeployment>(LoadOne("examples/modeldeployment-s3.yaml"));
  REQUIRE(md.ok());
  REQUIRE(md->spec.storage);
  CHECK(md->spec.storage->s3->credentials_secret_ref.name == "s3-credentials");
  CHECK_FALSE(md->spec.storage->s3->region.has_value());
  // Absent where not configured.
  CHECK_FALSE(Decode<TrainingJob>(LoadOne("examples/trainingjob.yaml"))->spec.storage);
}

TEST_CASE("unset optional fields stay unset and required ones have zero values", "[api]") {
  TrainingJob job;
  job.metadata = {{"name", "minimal"}};
  json j = Encode(job);
  CHECK(j["apiVersion"] == "kiln.dev/v1alpha1");
  CHECK(j["kind"] == "TrainingJob");
  CHECK(!j["spec"].contains("suspend"));
  CHECK(!j.contains("status"));
  CHECK(j["spec"]["workers"]["replicas"] == 0);
  CHECK(kTrainingJobs.Path("ml", "a") == "/apis/kiln.dev/v1alpha1/namespaces/ml/trainingjobs/a");
  CHECK(kMemberClusters.Path("", "west") == "/apis/kiln.dev/v1alpha1/memberclusters/west");
}

}  // namespace
}  // namespace kiln::api::v1alpha1
