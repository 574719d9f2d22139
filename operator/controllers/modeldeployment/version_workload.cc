#include "operator/controllers/modeldeployment/version_workload.h"

#include <cctype>
#include <cstdio>

#include "operator/api/labels.h"
#include "operator/controllers/storage/s3_access.h"

namespace kiln::modeldeployment {
namespace {

namespace v1 = api::v1alpha1;
using nlohmann::json;

constexpr size_t kMaxLabelValue = 63;

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

// 32-bit FNV-1a as 8 hex digits: stable across builds and platforms.
std::string Hash8(const std::string& s) {
  uint32_t h = 2166136261u;
  for (char ch : s) {
    h ^= static_cast<unsigned char>(ch);
    h *= 16777619u;
  }
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", h);
  return buf;
}

bool Under(const std::string& path, const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return path == d || path.rfind(d + "/", 0) == 0;
}

json SecurityContext() {
  // The restricted Pod Security Standard, and a read-only root: the worker
  // writes only under /tmp (an emptyDir; TMPDIR, the s3:// download cache).
  return {{"allowPrivilegeEscalation", false},
          {"readOnlyRootFilesystem", true},
          {"capabilities", {{"drop", json::array({"ALL"})}}}};
}

}  // namespace

StatusOr<std::string> CheckpointArg(const std::string& uri, bool has_s3,
                                    const trainingjob::SharedVolume& volume) {
  if (uri.rfind("s3://", 0) == 0) {
    if (!has_s3) {
      return Status::InvalidArgument("model URI " + uri +
                                     " needs spec.storage.s3 (the store's endpoint and the Secret "
                                     "with its credentials)");
    }
    return uri;  // kiln-worker downloads it into its cache (/tmp).
  }
  const std::string scheme = "file://";
  if (uri.rfind(scheme, 0) != 0 || uri.size() <= scheme.size() || uri[scheme.size()] != '/') {
    return Status::InvalidArgument("model URI \"" + uri +
                                   "\" is not a file:///absolute/path or s3://bucket/key");
  }
  const std::string path = uri.substr(scheme.size());
  const bool has_volume = !volume.claim_name.empty() || !volume.host_path.empty();
  if (has_volume && !Under(path, volume.mount_path)) {
    return Status::InvalidArgument("model URI " + uri +
                                   " is outside the shared volume mounted at " + volume.mount_path);
  }
  return path;
}

std::string VersionObjectName(const std::string& deployment, const std::string& version) {
  std::string clean;
  for (char c : version) {
    const auto u = static_cast<unsigned char>(c);
    clean += std::isalnum(u) ? static_cast<char>(std::tolower(u)) : '-';
  }
  const std::string suffix = clean == version ? "" : "-" + Hash8(version);
  return trainingjob::DnsLabel(deployment + "-" + clean, suffix);
}

std::string DeploymentSelector(const std::string& deployment) {
  return std::string(api::kModelDeploymentLabel) + "=" + deployment;
}

std::string CredentialsCopyName(const std::string& deployment) {
  return trainingjob::DnsLabel(deployment, "-serving-s3-credentials");
}

json BuildCredentialsCopy(const v1::ModelDeployment& md, const json& secret) {
  const std::string name = Str(md.metadata, "name");
  return s3access::MemberCopy(secret, Str(md.metadata, "namespace"), CredentialsCopyName(name),
                              {{api::kManagedByLabel, api::kManagedByValue},
                               {api::kModelDeploymentLabel, name},
                               {api::kModelDeploymentUidLabel, Str(md.metadata, "uid")}});
}

StatusOr<VersionWorkload> BuildVersionWorkload(const v1::ModelDeployment& md,
                                               const VersionWorkloadOptions& options) {
  const std::string name = Str(md.metadata, "name");
  const std::string ns = Str(md.metadata, "namespace");
  if (name.size() > kMaxLabelValue) {
    return Status::InvalidArgument("the name " + name +
                                   " is longer than a label value (63 characters), which "
                                   "kiln-router selects the versions' endpoints by");
  }
  const v1::ModelDeploymentSpec& spec = md.spec;
  const std::optional<v1::S3Storage> s3 =
      spec.storage ? spec.storage->s3 : std::optional<v1::S3Storage>();
  const trainingjob::SharedVolume& volume = options.volume;
  const bool has_volume = !volume.claim_name.empty() || !volume.host_path.empty();
  KILN_ASSIGN_OR_RETURN(const std::string path, CheckpointArg(options.uri, s3.has_value(), volume));

  const v1::ServingOptions serving = spec.serving.value_or(v1::ServingOptions{});
  const int32_t port = serving.port.value_or(8000);
  const int32_t gpus = spec.gpus_per_replica.value_or(1);
  json args = {"serve",
               "--checkpoint",
               path,
               "--bind",
               ":" + std::to_string(port),
               "--model-name",
               spec.model.name,
               "--model-version",
               options.version,
               "--max-running",
               std::to_string(serving.max_batch_size.value_or(32)),
               "--max-queue",
               std::to_string(std::max(1, serving.max_queued_requests.value_or(256)))};
  if (gpus > 0) {
    args.push_back("--device");
    args.push_back("cuda");
  }
  json resources = json::object();
  if (spec.resources) resources = *spec.resources;
  if (gpus > 0) {
    resources["limits"]["nvidia.com/gpu"] = gpus;
    resources["requests"]["nvidia.com/gpu"] = gpus;
  }
  json labels = {{api::kManagedByLabel, api::kManagedByValue},
                 {api::kModelDeploymentLabel, name},
                 {api::kModelVersionLabel, options.version}};
  json selector = {{api::kModelDeploymentLabel, name}, {api::kModelVersionLabel, options.version}};
  json container = {{"name", kServeContainer},
                    {"image", spec.image},
                    {"imagePullPolicy", "IfNotPresent"},
                    {"args", args},
                    {"env", json::array({{{"name", "TMPDIR"}, {"value", "/tmp"}}})},
                    {"ports", json::array({{{"name", "http"}, {"containerPort", port}}})},
                    {"readinessProbe",
                     {{"httpGet", {{"path", "/readyz"}, {"port", "http"}}},
                      {"periodSeconds", 2},
                      {"failureThreshold", 3}}},
                    {"livenessProbe",
                     {{"httpGet", {{"path", "/healthz"}, {"port", "http"}}},
                      {"periodSeconds", 10},
                      {"failureThreshold", 6}}},
                    {"resources", resources},
                    {"terminationMessagePolicy", "FallbackToLogsOnError"},
                    {"securityContext", SecurityContext()},
                    {"volumeMounts", json::array({{{"name", "tmp"}, {"mountPath", "/tmp"}}})}};
  json volumes = json::array({{{"name", "tmp"}, {"emptyDir", json::object()}}});
  if (has_volume) {
    container["volumeMounts"].push_back(
        {{"name", "shared"}, {"mountPath", volume.mount_path}, {"readOnly", true}});
    if (!volume.claim_name.empty()) {
      volumes.push_back(
          {{"name", "shared"}, {"persistentVolumeClaim", {{"claimName", volume.claim_name}}}});
    } else {
      volumes.push_back(
          {{"name", "shared"}, {"hostPath", {{"path", volume.host_path}, {"type", "Directory"}}}});
    }
  }
  json pod_spec = {{"securityContext",
                    {{"runAsNonRoot", true},
                     {"runAsUser", 65532},
                     {"runAsGroup", 65532},
                     {"fsGroup", 65532},
                     {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
                   {"containers", json::array({container})},
                   {"volumes", volumes}};
  // In the ModelDeployment's own cluster the spec's Secret itself; in a
  // member kiln's copy of it.
  if (s3) {
    s3access::AddToPod(
        *s3, options.in_member ? CredentialsCopyName(name) : s3->credentials_secret_ref.name,
        pod_spec);
  }
  if (spec.node_selector) pod_spec["nodeSelector"] = *spec.node_selector;
  if (spec.tolerations) pod_spec["tolerations"] = *spec.tolerations;

  const std::string object_name = VersionObjectName(name, options.version);
  json metadata = {{"name", object_name}, {"namespace", ns}, {"labels", labels}};
  if (options.in_member) {
    metadata["labels"][api::kModelDeploymentUidLabel] = Str(md.metadata, "uid");
  } else {
    metadata["ownerReferences"] = json::array({{{"apiVersion", md.api_version},
                                                {"kind", md.kind},
                                                {"name", name},
                                                {"uid", Str(md.metadata, "uid")},
                                                {"controller", true},
                                                {"blockOwnerDeletion", true}}});
  }
  VersionWorkload out;
  out.deployment = {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", metadata},
      {"spec",
       {{"replicas", options.replicas},
        {"selector", {{"matchLabels", selector}}},
        {"strategy",
         {{"type", "RollingUpdate"}, {"rollingUpdate", {{"maxUnavailable", 0}, {"maxSurge", 1}}}}},
        {"template", {{"metadata", {{"labels", labels}}}, {"spec", pod_spec}}}}}};
  out.service = {
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata", metadata},
      {"spec",
       {{"selector", selector},
        {"ports",
         json::array(
             {{{"name", "http"}, {"port", port}, {"targetPort", "http"}, {"protocol", "TCP"}}})}}}};
  return out;
}

}  // namespace kiln::modeldeployment
