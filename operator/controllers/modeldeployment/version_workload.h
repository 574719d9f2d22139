// The workload of one live version of a ModelDeployment: a Deployment of
// `kiln-worker serve` pods (the version's checkpoint, the spec's serving
// options, resources, GPUs and placement, readiness on /readyz) and a Service
// with its port named "http", labelled with the deployment's name and the
// version so that kiln-router finds the version's ready endpoints in the
// Service's EndpointSlices (router/api_source.h). In the deployment's own
// cluster both carry a controlling owner reference to the ModelDeployment
// (garbage-collected with it); in a member cluster its UID as a label (the
// reconciler deletes them). Pure functions: no I/O, thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_VERSION_WORKLOAD_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_VERSION_WORKLOAD_H_

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/controllers/trainingjob/worker_pods.h"

namespace kiln::modeldeployment {

// The serving container's name.
inline constexpr const char* kServeContainer = "serve";

// Which version to build, and how many replicas.
struct VersionWorkloadOptions {
  std::string version;
  std::string uri;  // file:///path under the shared volume, or s3://bucket/key.
  int32_t replicas = 0;
  // Where file:// checkpoints lie (the operator's --shared-volume-* flags).
  trainingjob::SharedVolume volume;
  // For a member cluster other than the deployment's own: the objects carry
  // the deployment's UID as a label (kModelDeploymentUidLabel) instead of an
  // owner reference, and the pods mount kiln's copy of the S3 credentials
  // Secret (CredentialsCopyName) instead of the spec's.
  bool in_member = false;
};

// The name of kiln's copy of `deployment`'s S3 credentials Secret in a
// member cluster (never the user's own name).
std::string CredentialsCopyName(const std::string& deployment);

// kiln's copy of `secret` (spec.storage.s3's credentials) for a member
// cluster: CredentialsCopyName, labelled with the deployment's name and UID.
nlohmann::json BuildCredentialsCopy(const api::v1alpha1::ModelDeployment& md,
                                    const nlohmann::json& secret);

struct VersionWorkload {
  nlohmann::json deployment;  // apps/v1 Deployment
  nlohmann::json service;     // v1 Service
};

// The name of version `version`'s Deployment and Service: a DNS label from
// the deployment's name and the version (with a hash when the version had to
// be changed to fit, so v1.0 and v1-0 do not collide).
std::string VersionObjectName(const std::string& deployment, const std::string& version);

// "kiln.dev/model-deployment=<name>": selects every version's pods.
std::string DeploymentSelector(const std::string& deployment);

// What `kiln-worker serve --checkpoint` and `eval --checkpoint` get for the
// checkpoint `uri`: an s3:// URI as it is (the worker downloads it; it needs
// spec.storage.s3, `has_s3`), a file:// URI's path (under the shared volume,
// when there is one). InvalidArgument otherwise, naming the URI.
StatusOr<std::string> CheckpointArg(const std::string& uri, bool has_s3,
                                    const trainingjob::SharedVolume& volume);

// The objects for one version of `md` (which needs metadata name, namespace
// and uid). InvalidArgument for what no pod could serve: an s3:// URI without
// spec.storage.s3, a file:// path outside the shared volume, a name too long
// for a label value. With spec.storage.s3 the pods mount its credentials
// Secret and get the store's settings (storage/s3_access.h).
StatusOr<VersionWorkload> BuildVersionWorkload(const api::v1alpha1::ModelDeployment& md,
                                               const VersionWorkloadOptions& options);

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_VERSION_WORKLOAD_H_
