// The quality gate: before a canary takes any traffic (and again at each
// `qualityGate` canary step), one Job scores the
// canary's and the stable version's checkpoints on the same evaluation set
// (analysis.qualityGate.evaluationSet) with `kiln-worker eval`, one
// container each in one pod, so both see the same examples on the same
// node; each writes its JSON report as its termination message (`eval
// --report /dev/termination-log`), which the controller reads from the
// pod's status. The canary fails the gate when its loss (or perplexity) is
// worse than the stable version's by more than maxRegression (relative).
// Pure functions, thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_QUALITY_GATE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_QUALITY_GATE_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "kube/resource.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/controllers/trainingjob/worker_pods.h"

namespace kiln::modeldeployment {

inline const kube::Resource kJobs{"batch", "v1", "jobs", "Job", true};

// On the gate's Job and pod: the canary version it scores.
inline constexpr const char* kQualityGateLabel = "kiln.dev/quality-gate";
// The pod's containers.
inline constexpr const char* kGateCanaryContainer = "canary";
inline constexpr const char* kGateStableContainer = "stable";

// What the gate compares, and at which canary step.
struct GateVersions {
  std::string canary, canary_uri;
  std::string stable, stable_uri;
  // The `qualityGate` step this gate is (-1: the gate before any traffic).
  int32_t step = -1;
};

// The gate Job's name for `canary` at canary step `step` (-1: the gate
// before any traffic), a DNS label.
std::string GateJobName(const std::string& deployment, const std::string& canary,
                        int32_t step = -1);

// The gate as it runs at canary step `step` of `md` (-1: before any
// traffic): spec.analysis.qualityGate, with the fields that step's
// qualityGate sets in its place. `md` must have spec.analysis.qualityGate.
api::v1alpha1::QualityGate GateAtStep(const api::v1alpha1::ModelDeployment& md, int32_t step);

// The gate's Job for `md` (metadata name, namespace, uid;
// spec.analysis.qualityGate set) at versions.step (GateAtStep). The checkpoints may be s3:// (with
// spec.storage.s3, whose Secret the pod mounts); the evaluation set must be a
// file (`kiln-worker eval --data` reads files only). InvalidArgument for a
// URI or evaluation set no pod can read (as BuildVersionWorkload).
StatusOr<nlohmann::json> BuildGateJob(const api::v1alpha1::ModelDeployment& md,
                                      const GateVersions& versions,
                                      const trainingjob::SharedVolume& volume);

// The gate's verdict from its pod, so far.
struct GateVerdict {
  std::string phase;    // Running, Successful or Failed.
  std::string message;  // "loss: canary 2.1 vs stable 2.0 (+5.0%, max +2.0%)"
  std::vector<api::v1alpha1::Measurement> measurements;  // Once finished.
};

// Judges the gate from `pod` (null: not made yet) at time `time`.
GateVerdict JudgeGate(const nlohmann::json& pod, const api::v1alpha1::QualityGate& gate,
                      const std::string& time);

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_QUALITY_GATE_H_
