// S3 access for kiln-worker pods: what a pod needs to reach the object store
// that a TrainingJob's or ModelDeployment's spec.storage.s3 names, in the
// form the worker reads (worker/storage/s3_options.h, docs/storage.md):
//  - the credentials Secret as a read-only volume, with
//    KILN_S3_CREDENTIALS_DIR pointing at it, so the keys never appear in a
//    pod spec (nor in `kubectl describe pod`);
//  - the endpoint, region and addressing style as environment variables.
// Also the check that a Secret holds the keys the worker needs, and the copy
// of it that kiln keeps in a member cluster. Pure functions, thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_STORAGE_S3_ACCESS_H_
#define KILN_OPERATOR_CONTROLLERS_STORAGE_S3_ACCESS_H_

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "operator/api/v1alpha1/common.h"

namespace kiln::s3access {

// The Secret's keys, as the worker reads them from KILN_S3_CREDENTIALS_DIR.
inline constexpr const char* kAccessKeyIdKey = "AWS_ACCESS_KEY_ID";
inline constexpr const char* kSecretAccessKeyKey = "AWS_SECRET_ACCESS_KEY";
inline constexpr const char* kSessionTokenKey = "AWS_SESSION_TOKEN";
// Optional: the PEM CAs of a store behind a private CA (worker/storage/s3_options.h).
inline constexpr const char* kCaKey = "ca.crt";
// The condition (on a TrainingJob or ModelDeployment with spec.storage.s3)
// saying whether its credentials Secret is usable; False holds the workers
// back, with a SecretProblem's reason and message.
inline constexpr const char* kCredentialsReadyCondition = "CredentialsReady";
// The pod volume holding the Secret, and where every container mounts it.
inline constexpr const char* kVolumeName = "s3-credentials";
inline constexpr const char* kMountPath = "/var/run/secrets/kiln.dev/s3";

// Adds S3 access for `s3` to `pod_spec` (a v1 PodSpec as JSON): the Secret
// `secret_name` (in the pod's namespace: the spec's own Secret, or kiln's
// copy of it in a member cluster) as a read-only volume mounted in every
// container and init container, KILN_S3_CREDENTIALS_DIR, and
// AWS_ENDPOINT_URL_S3, AWS_REGION and KILN_S3_ADDRESSING_STYLE for the fields
// that are set. Never the keys' values.
void AddToPod(const api::v1alpha1::S3Storage& s3, const std::string& secret_name,
              nlohmann::json& pod_spec);

// Why a Secret cannot serve as S3 credentials.
struct SecretProblem {
  // SecretNotFound, SecretKeyMissing or SecretKeyInvalid (a condition's reason).
  std::string reason;
  std::string message;  // Names the Secret and the key.
};

// Checks `secret` (a v1 Secret as JSON; null when it does not exist), which
// spec.storage.s3.credentialsSecretRef names as `ns`/`name`: it must hold
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, neither empty, and a ca.crt,
// when it has one, must hold a PEM certificate. None when it does.
std::optional<SecretProblem> CheckSecret(const nlohmann::json& secret, const std::string& ns,
                                         const std::string& name);

// kiln's copy of `secret` for a member cluster: named `name` in `ns`, with
// `labels`, the original's type and data and nothing else (no owner
// references, which do not cross clusters; no annotations, which may hold
// the last-applied original).
nlohmann::json MemberCopy(const nlohmann::json& secret, const std::string& ns,
                          const std::string& name, const nlohmann::json& labels);

// Whether `copy`, kiln's copy in a member, still matches `wanted` (a
// MemberCopy): the same type, data and labels.
bool CopyCurrent(const nlohmann::json& copy, const nlohmann::json& wanted);

}  // namespace kiln::s3access

#endif  // KILN_OPERATOR_CONTROLLERS_STORAGE_S3_ACCESS_H_
