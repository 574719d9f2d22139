// S3 access for worker pods: the Secret as a read-only volume in every
// container with KILN_S3_CREDENTIALS_DIR, the store's settings as the
// worker's environment, never a key; and the Secret's check, naming the
// Secret and the key it lacks.
#include "operator/controllers/storage/s3_access.h"

#include <catch2/catch.hpp>

#include "base/base64.h"

namespace kiln::s3access {
namespace {

namespace v1 = api::v1alpha1;
using nlohmann::json;

json Secret(json data) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"name", "s3"}, {"namespace", "ml"}}},
          {"data", std::move(data)}};
}

TEST_CASE("every container mounts the Secret read-only and gets only what is set", "[s3access]") {
  json pod = {{"initContainers", json::array({{{"name", "prepare"}}})},
              {"containers", json::array({{{"name", "a"},
                                           {"env", json::array({{{"name", "X"}, {"value", "1"}}})},
                                           {"volumeMounts", json::array({{{"name", "tmp"}}})}},
                                          {{"name", "b"}}})},
              {"volumes", json::array({{{"name", "tmp"}, {"emptyDir", json::object()}}})}};
  v1::S3Storage s3;
  s3.region = "us-west-2";
  s3.credentials_secret_ref.name = "team-s3";
  AddToPod(s3, "team-s3-copy", pod);
  CHECK(pod["volumes"][1] ==
        json{{"name", kVolumeName},
             {"secret", {{"secretName", "team-s3-copy"}, {"defaultMode", 0440}}}});
  for (const json* c : {&pod["initContainers"][0], &pod["containers"][0], &pod["containers"][1]}) {
    INFO((*c)["name"]);
    CHECK((*c)["volumeMounts"].back() ==
          json{{"name", kVolumeName}, {"mountPath", kMountPath}, {"readOnly", true}});
    // Region only: no endpoint (AWS) and no addressing style (the worker's default).
    json env = json::array();
    for (const auto& e : (*c)["env"]) {
      if (e["name"] != "X") env.push_back(e);
    }
    CHECK(env == json::array({{{"name", "KILN_S3_CREDENTIALS_DIR"}, {"value", kMountPath}},
                              {{"name", "AWS_REGION"}, {"value", "us-west-2"}}}));
  }
  CHECK(pod["containers"][0]["env"][0]["name"] == "X");  // Kept, first.
}

TEST_CASE("a Secret serves as credentials only with both keys", "[s3access]") {
  CHECK_FALSE(
      CheckSecret(Secret({{"AWS_ACCESS_KEY_ID", "QQ=="}, {"AWS_SECRET_ACCESS_KEY", "Qg=="}}), "ml",
                  "s3")
          .has_value());
  auto missing = CheckSecret(json(), "ml", "s3");
  REQUIRE(missing);
  CHECK(missing->reason == "SecretNotFound");
  CHECK(missing->message == "Secret ml/s3 (spec.storage.s3.credentialsSecretRef) does not exist");
  auto no_secret_key = CheckSecret(Secret({{"AWS_ACCESS_KEY_ID", "QQ=="}}), "ml", "s3");
  REQUIRE(no_secret_key);
  CHECK(no_secret_key->reason == "SecretKeyMissing");
  CHECK(no_secret_key->message ==
        "Secret ml/s3 (spec.storage.s3.credentialsSecretRef) has no key AWS_SECRET_ACCESS_KEY (it "
        "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, optionally AWS_SESSION_TOKEN)");
  auto empty = CheckSecret(Secret({{"AWS_ACCESS_KEY_ID", ""}, {"AWS_SECRET_ACCESS_KEY", "Qg=="}}),
                           "ml", "s3");
  REQUIRE(empty);
  CHECK(empty->message.find("has no key AWS_ACCESS_KEY_ID") != std::string::npos);
  json no_data = Secret(json::object());
  no_data.erase("data");
  auto none = CheckSecret(no_data, "ml", "s3");
  REQUIRE(none);
  CHECK(none->reason == "SecretKeyMissing");
}

TEST_CASE("a ca.crt in the Secret must hold a PEM certificate", "[s3access]") {
  const std::string pem =
      Base64Encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  CHECK_FALSE(CheckSecret(Secret({{"AWS_ACCESS_KEY_ID", "QQ=="},
                                  {"AWS_SECRET_ACCESS_KEY", "Qg=="},
                                  {"ca.crt", pem}}),
                          "ml", "s3")
                  .has_value());
  for (const std::string& bad : {Base64Encode("not a certificate"), std::string("%%%")}) {
    auto problem = CheckSecret(
        Secret({{"AWS_ACCESS_KEY_ID", "QQ=="}, {"AWS_SECRET_ACCESS_KEY", "Qg=="}, {"ca.crt", bad}}),
        "ml", "s3");
    REQUIRE(problem);
    CHECK(problem->reason == "SecretKeyInvalid");
    CHECK_THAT(problem->message,
               Catch::StartsWith("Secret ml/s3 (spec.storage.s3.credentialsSecretRef) has a key "
                                 "ca.crt that holds no PEM certificate"));
  }
}

TEST_CASE("a member's copy holds the data and labels, and is current until the data changes",
          "[s3access]") {
  json original = Secret({{"AWS_ACCESS_KEY_ID", "QQ=="}, {"AWS_SECRET_ACCESS_KEY", "Qg=="}});
  original["type"] = "Opaque";
  original["metadata"]["annotations"] = {{"note", "x"}};
  const json labels = {{"app.kubernetes.io/managed-by", "kiln"}, {"kiln.dev/trainingjob-uid", "u"}};
  const json copy = MemberCopy(original, "ml", "job-s3-credentials", labels);
  CHECK(copy == json{{"apiVersion", "v1"},
                     {"kind", "Secret"},
                     {"metadata",
                      {{"name", "job-s3-credentials"}, {"namespace", "ml"}, {"labels", labels}}},
                     {"type", "Opaque"},
                     {"data", original["data"]}});
  // As the member's API server returns it: its own metadata beside ours.
  json stored = copy;
  stored["metadata"]["resourceVersion"] = "12";
  stored["metadata"]["uid"] = "m-1";
  CHECK(CopyCurrent(stored, copy));
  json rotated = original;
  rotated["data"]["AWS_SECRET_ACCESS_KEY"] = "Qw==";
  CHECK_FALSE(CopyCurrent(stored, MemberCopy(rotated, "ml", "job-s3-credentials", labels)));
  stored["metadata"]["labels"].erase("kiln.dev/trainingjob-uid");
  CHECK_FALSE(CopyCurrent(stored, copy));
}

}  // namespace
}  // namespace kiln::s3access
