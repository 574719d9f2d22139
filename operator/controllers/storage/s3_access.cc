#include "operator/controllers/storage/s3_access.h"

#include "base/base64.h"

namespace kiln::s3access {
namespace {

using nlohmann::json;

void AddEnv(json& container, const std::string& name, const std::string& value) {
  if (!container.contains("env")) container["env"] = json::array();
  container["env"].push_back({{"name", name}, {"value", value}});
}

void AddTo(const api::v1alpha1::S3Storage& s3, json& container) {
  if (!container.contains("volumeMounts")) container["volumeMounts"] = json::array();
  container["volumeMounts"].push_back(
      {{"name", kVolumeName}, {"mountPath", kMountPath}, {"readOnly", true}});
  AddEnv(container, "KILN_S3_CREDENTIALS_DIR", kMountPath);
  if (s3.endpoint) AddEnv(container, "AWS_ENDPOINT_URL_S3", *s3.endpoint);
  if (s3.region) AddEnv(container, "AWS_REGION", *s3.region);
  if (s3.addressing_style) {
    AddEnv(container, "KILN_S3_ADDRESSING_STYLE",
           *s3.addressing_style == "Virtual" ? "virtual" : "path");
  }
}

// The API server returns a Secret's values base64-encoded under `data`
// (stringData is write-only).
bool HasKey(const json& secret, const char* key) {
  const json data = secret.value("data", json::object());
  return data.contains(key) && data[key].is_string() && !data[key].get<std::string>().empty();
}

}  // namespace

void AddToPod(const api::v1alpha1::S3Storage& s3, const std::string& secret_name, json& pod_spec) {
  if (!pod_spec.contains("volumes")) pod_spec["volumes"] = json::array();
  // 0440 with the pod's fsGroup: readable by the non-root worker, no one else.
  pod_spec["volumes"].push_back(
      {{"name", kVolumeName}, {"secret", {{"secretName", secret_name}, {"defaultMode", 0440}}}});
  for (const char* list : {"initContainers", "containers"}) {
    if (!pod_spec.contains(list)) continue;
    for (auto& container : pod_spec[list]) AddTo(s3, container);
  }
}

std::optional<SecretProblem> CheckSecret(const json& secret, const std::string& ns,
                                         const std::string& name) {
  const std::string what = "Secret " + ns + "/" + name + " (spec.storage.s3.credentialsSecretRef)";
  if (secret.is_null()) return SecretProblem{"SecretNotFound", what + " does not exist"};
  for (const char* key : {kAccessKeyIdKey, kSecretAccessKeyKey}) {
    if (!HasKey(secret, key)) {
      return SecretProblem{"SecretKeyMissing", what + " has no key " + key + " (it needs " +
                                                   kAccessKeyIdKey + " and " + kSecretAccessKeyKey +
                                                   ", optionally " + kSessionTokenKey + ")"};
    }
  }
  const json data = secret.value("data", json::object());
  if (data.contains(kCaKey)) {
    auto pem = data[kCaKey].is_string()
                   ? Base64Decode(data[kCaKey].get<std::string>())
                   : StatusOr<std::string>(Status::InvalidArgument("not text"));
    if (!pem.ok() || pem->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return SecretProblem{"SecretKeyInvalid", what + " has a key " + kCaKey +
                                                   " that holds no PEM certificate (it is "
                                                   "optional: the CAs of a store behind a "
                                                   "private CA)"};
    }
  }
  return std::nullopt;
}

json MemberCopy(const json& secret, const std::string& ns, const std::string& name,
                const json& labels) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}}},
          {"type", secret.value("type", "Opaque")},
          {"data", secret.value("data", json::object())}};
}

bool CopyCurrent(const json& copy, const json& wanted) {
  const json labels = copy["metadata"].value("labels", json::object());
  for (const auto& [k, v] : wanted["metadata"]["labels"].items()) {
    if (!labels.contains(k) || labels[k] != v) return false;
  }
  return copy.value("type", "Opaque") == wanted.value("type", "Opaque") &&
         copy.value("data", json::object()) == wanted.value("data", json::object());
}

}  // namespace kiln::s3access
