#include "operator/controllers/modeldeployment/quality_gate.h"

#include <cstdio>
#include <optional>

#include "operator/api/labels.h"
#include "operator/controllers/modeldeployment/version_workload.h"
#include "operator/controllers/storage/s3_access.h"

namespace kiln::modeldeployment {
namespace {

namespace v1 = api::v1alpha1;
using nlohmann::json;

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

bool Under(const std::string& path, const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return path == d || path.rfind(d + "/", 0) == 0;
}

// The evaluation set's path, readable through the shared volume (if any):
// `kiln-worker eval --data` reads a file only.
StatusOr<std::string> EvaluationSetPath(const std::string& uri,
                                        const trainingjob::SharedVolume& volume) {
  const std::string what = "analysis.qualityGate.evaluationSet";
  const std::string scheme = "file://";
  if (uri.rfind("s3://", 0) == 0) {
    return Status::InvalidArgument(what + " " + uri +
                                   ": kiln-worker eval reads its evaluation set from a file only; "
                                   "put it on the shared volume (file:///path)");
  }
  if (uri.rfind(scheme, 0) != 0 || uri.size() <= scheme.size() || uri[scheme.size()] != '/') {
    return Status::InvalidArgument(what + " " + uri + " is not a file:///absolute/path");
  }
  const std::string path = uri.substr(scheme.size());
  const bool has_volume = !volume.claim_name.empty() || !volume.host_path.empty();
  if (has_volume && !Under(path, volume.mount_path)) {
    return Status::InvalidArgument(what + " " + uri + " is outside the shared volume mounted at " +
                                   volume.mount_path);
  }
  return path;
}

std::string Percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%+.1f%%", fraction * 100);
  return buf;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

}  // namespace

std::string GateJobName(const std::string& deployment, const std::string& canary, int32_t step) {
  return VersionObjectName(deployment,
                           canary + "-gate" + (step < 0 ? "" : "-step" + std::to_string(step)));
}

v1::QualityGate GateAtStep(const v1::ModelDeployment& md, int32_t step) {
  v1::QualityGate gate =
      md.spec.analysis.value_or(v1::AnalysisSpec{}).quality_gate.value_or(v1::QualityGate{});
  if (step < 0 || !md.spec.strategy || !md.spec.strategy->canary ||
      !md.spec.strategy->canary->steps) {
    return gate;
  }
  const auto& steps = *md.spec.strategy->canary->steps;
  const auto i = static_cast<size_t>(step);
  if (i >= steps.size() || !steps[i].quality_gate) return gate;
  const v1::QualityGateStep& at = *steps[i].quality_gate;
  if (at.evaluation_set) gate.evaluation_set = *at.evaluation_set;
  if (at.samples) gate.samples = at.samples;
  if (at.max_regression) gate.max_regression = at.max_regression;
  return gate;
}

StatusOr<json> BuildGateJob(const v1::ModelDeployment& md, const GateVersions& versions,
                            const trainingjob::SharedVolume& volume) {
  if (!md.spec.analysis || !md.spec.analysis->quality_gate) {
    return Status::InvalidArgument("no analysis.qualityGate");
  }
  const v1::QualityGate gate = GateAtStep(md, versions.step);
  const std::optional<v1::S3Storage> s3 =
      md.spec.storage ? md.spec.storage->s3 : std::optional<v1::S3Storage>();
  KILN_ASSIGN_OR_RETURN(std::string data, EvaluationSetPath(gate.evaluation_set, volume));
  KILN_ASSIGN_OR_RETURN(std::string canary,
                        CheckpointArg(versions.canary_uri, s3.has_value(), volume));
  KILN_ASSIGN_OR_RETURN(std::string stable,
                        CheckpointArg(versions.stable_uri, s3.has_value(), volume));
  const std::string name = Str(md.metadata, "name");
  json labels = {{api::kManagedByLabel, api::kManagedByValue},
                 {api::kModelDeploymentLabel, name},
                 {kQualityGateLabel, versions.canary}};
  json mounts = json::array({{{"name", "tmp"}, {"mountPath", "/tmp"}}});
  json volumes = json::array({{{"name", "tmp"}, {"emptyDir", json::object()}}});
  if (!volume.claim_name.empty() || !volume.host_path.empty()) {
    mounts.push_back({{"name", "shared"}, {"mountPath", volume.mount_path}, {"readOnly", true}});
    volumes.push_back(
        !volume.claim_name.empty()
            ? json{{"name", "shared"},
                   {"persistentVolumeClaim", {{"claimName", volume.claim_name}}}}
            : json{{"name", "shared"},
                   {"hostPath", {{"path", volume.host_path}, {"type", "Directory"}}}});
  }
  auto container = [&](const char* container_name, const std::string& checkpoint) {
    json c = {{"name", container_name},
              {"image", md.spec.image},
              {"imagePullPolicy", "IfNotPresent"},
              {"args", json::array({"eval", "--data", data, "--checkpoint", checkpoint, "--samples",
                                    std::to_string(gate.samples.value_or(256)), "--seed",
                                    std::to_string(gate.seed.value_or(1)), "--report",
                                    "/dev/termination-log"})},
              {"env", json::array({{{"name", "TMPDIR"}, {"value", "/tmp"}},
                                   {{"name", "OMP_NUM_THREADS"}, {"value", "1"}}})},
              {"terminationMessagePath", "/dev/termination-log"},
              {"terminationMessagePolicy", "FallbackToLogsOnError"},
              {"securityContext",
               {{"allowPrivilegeEscalation", false},
                {"readOnlyRootFilesystem", true},
                {"capabilities", {{"drop", json::array({"ALL"})}}}}},
              {"volumeMounts", mounts}};
    if (md.spec.resources) c["resources"] = *md.spec.resources;
    return c;
  };
  json pod_spec = {{"restartPolicy", "Never"},
                   {"securityContext",
                    {{"runAsNonRoot", true},
                     {"runAsUser", 65532},
                     {"runAsGroup", 65532},
                     {"fsGroup", 65532},
                     {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
                   {"containers", json::array({container(kGateCanaryContainer, canary),
                                               container(kGateStableContainer, stable)})},
                   {"volumes", volumes}};
  if (s3) s3access::AddToPod(*s3, s3->credentials_secret_ref.name, pod_spec);
  if (md.spec.node_selector) pod_spec["nodeSelector"] = *md.spec.node_selector;
  if (md.spec.tolerations) pod_spec["tolerations"] = *md.spec.tolerations;
  return json{{"apiVersion", "batch/v1"},
              {"kind", "Job"},
              {"metadata",
               {{"name", GateJobName(name, versions.canary, versions.step)},
                {"namespace", Str(md.metadata, "namespace")},
                {"labels", labels},
                {"ownerReferences", json::array({{{"apiVersion", md.api_version},
                                                  {"kind", md.kind},
                                                  {"name", name},
                                                  {"uid", Str(md.metadata, "uid")},
                                                  {"controller", true},
                                                  {"blockOwnerDeletion", true}}})}}},
              {"spec",
               {{"backoffLimit", 0},
                {"activeDeadlineSeconds", 3600},
                {"template", {{"metadata", {{"labels", labels}}}, {"spec", pod_spec}}}}}};
}

GateVerdict JudgeGate(const json& pod, const v1::QualityGate& gate, const std::string& time) {
  GateVerdict out{.phase = "Running", .message = "", .measurements = {}};
  const std::string metric = gate.metric.value_or("loss");
  const double max_regression = gate.max_regression.value_or(0.02);
  if (pod.is_null()) {
    out.message = "the evaluation Job's pod is not there yet";
    return out;
  }
  std::optional<double> scores[2];
  const char* names[2] = {kGateCanaryContainer, kGateStableContainer};
  for (const auto& c : pod.value("status", json::object()).value("containerStatuses", json())) {
    const json t = c.value("state", json::object()).value("terminated", json());
    if (!t.is_object()) continue;
    for (int i = 0; i < 2; ++i) {
      if (c.value("name", "") != names[i]) continue;
      const std::string message = t.value("message", "");
      const int exit_code = t.value("exitCode", 0);
      const json report = json::parse(message, nullptr, /*allow_exceptions=*/false);
      const json* loss = report.is_object() && report.contains("loss") && report["loss"].is_object()
                             ? &report["loss"]
                             : nullptr;
      const char* field = metric == "perplexity" ? "perplexity" : "mean";
      if (exit_code != 0 || loss == nullptr || !loss->contains(field) ||
          !(*loss)[field].is_number()) {
        out.phase = "Failed";
        out.message = std::string("kiln-worker eval of the ") + names[i] + " exited " +
                      std::to_string(exit_code) + ": " + message.substr(0, 300);
        return out;
      }
      scores[i] = (*loss)[field].get<double>();
    }
  }
  if (!scores[0] || !scores[1]) {
    out.message = "scoring both versions on the evaluation set";
    return out;
  }
  const double canary = *scores[0], stable = *scores[1];
  const double regression = stable > 0 ? (canary - stable) / stable : 0;
  const bool passed = regression <= max_regression;
  out.phase = passed ? "Successful" : "Failed";
  out.message = metric + ": canary " + Num(canary) + " vs stable " + Num(stable) + " (" +
                Percent(regression) + ", max " + Percent(max_regression) + ")";
  out.measurements = {{"canary " + metric, canary, "Successful", time},
                      {"stable " + metric, stable, "Successful", time},
                      {"regression", regression, passed ? "Successful" : "Failed", time}};
  return out;
}

}  // namespace kiln::modeldeployment
