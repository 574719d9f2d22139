#include "operator/controllers/modeldeployment/reconciler.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/duration.h"
#include "base/log.h"
#include "base/time_format.h"
#include "kube/api_error.h"
#include "operator/api/conditions.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/modeldeployment/analysis.h"
#include "operator/controllers/modeldeployment/gateway_route.h"
#include "operator/controllers/modeldeployment/pod_trouble.h"
#include "operator/controllers/modeldeployment/prometheus_source.h"
#include "operator/controllers/modeldeployment/quality_gate.h"
#include "operator/controllers/modeldeployment/version_workload.h"
#include "operator/controllers/storage/credentials_copy.h"
#include "operator/controllers/storage/s3_access.h"
#include "operator/fleet/member_namespace.h"
#include "operator/placement/api_label_selector.h"

namespace kiln::modeldeployment {
namespace {

namespace v1 = api::v1alpha1;
using nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::system_clock;

constexpr const char* kTemplateHashAnnotation = "kiln.dev/template-hash";
// On a version's Deployment once it is no longer live: when it lost its weight.
constexpr const char* kUnweightedSinceAnnotation = "kiln.dev/unweighted-since";
constexpr size_t kMaxAnalysisRuns = 20;
constexpr size_t kMaxMeasurements = 50;

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

std::string Hash(const json& j) {
  uint64_t h = 1469598103934665603ull;
  for (char ch : j.dump()) {
    h ^= static_cast<unsigned char>(ch);
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

milliseconds DurationOr(const std::optional<std::string>& text, milliseconds fallback) {
  if (!text) return fallback;
  auto d = ParseDuration(*text);
  return d.ok() ? std::chrono::duration_cast<milliseconds>(*d) : fallback;
}

std::optional<Clock::time_point> TimeOf(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  auto t = ParseRfc3339(*text);
  if (!t.ok()) return std::nullopt;
  return std::chrono::time_point_cast<Clock::duration>(*t);
}

std::string Seconds(milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0fs", std::chrono::duration<double>(d).count());
  return buf;
}

using api::SetCondition;

std::string GateRunName(const std::string& canary) { return canary + "-quality-gate"; }
std::string StepGateRunName(const std::string& canary, size_t step) {
  return canary + "-step" + std::to_string(step) + "-quality-gate";
}

// What one reconcile decides about the rollout: the status it moves to, the
// Events to record once that status is written, and when to look again.
class Rollout {
 public:
  // `ready`: each version's ready replicas; `trouble`: why a version's pods
  // are not ready, where known.
  Rollout(const v1::ModelDeployment& md, std::map<std::string, int32_t> ready,
          std::map<std::string, std::string> trouble, Clock::time_point now, MetricsSource* source,
          PrometheusSource* prometheus, milliseconds resync,
          const trainingjob::SharedVolume& volume)
      : md_(md),
        spec_(md.spec),
        status_(md.status.value_or(v1::ModelDeploymentStatus{})),
        ready_(std::move(ready)),
        trouble_(std::move(trouble)),
        now_(now),
        now_text_(FormatRfc3339(now)),
        source_(source),
        prometheus_(prometheus),
        resync_hint_(resync),
        volume_(volume) {
    if (spec_.strategy && spec_.strategy->canary) {
      steps_ = spec_.strategy->canary->steps.value_or(std::vector<v1::CanaryStep>{});
      scale_down_delay_ =
          DurationOr(spec_.strategy->canary->scale_down_delay, std::chrono::minutes(10));
      progress_deadline_ =
          DurationOr(spec_.strategy->canary->progress_deadline, std::chrono::minutes(10));
    }
    replicas_ = spec_.replicas.value_or(1);
  }

  struct Event {
    runtime::EventType type;
    std::string reason;
    std::string message;
  };

  // Decides. `buildable` says why spec.model cannot be served, if it cannot.
  void Decide(const Status& buildable) {
    const std::string& v = spec_.model.version;
    if (!status_.stable_version || status_.stable_version->empty()) {
      if (!buildable.ok()) {
        Fail("cannot serve " + v + ": " + buildable.message());
        return;
      }
      status_.stable_version = v;
      status_.stable_uri = spec_.model.uri;
      Note(runtime::EventType::kNormal, "Deploying", "the first version, " + v);
    }
    if (!status_.stable_uri) status_.stable_uri = spec_.model.uri;
    if (status_.stopped_version && *status_.stopped_version != v) status_.stopped_version.reset();
    ExpirePrevious();
    HandleAction();
    if (!action_message_.empty()) {
      // The action could not be carried out yet (Rollback to a version with
      // no ready pod): nothing else moves until it can.
      status_.message = action_message_;
      Wake(resync_hint_);
      return;
    }

    if (v == *status_.stable_version) {
      if (Canary()) {
        AllToStable();
        Note(runtime::EventType::kNormal, "RolloutCancelled",
             "spec.model is the stable version " + v + " again; the canary " +
                 *status_.canary_version + " is removed");
        ClearCanary();
      }
      if (spec_.model.uri != status_.stable_uri.value_or("")) {
        status_.stable_uri = spec_.model.uri;
        Note(runtime::EventType::kNormal, "UpdatedInPlace",
             "spec.model.uri changed without a new version: " + v + " now serves " +
                 spec_.model.uri + " (a rolling update, no canary)");
      }
      Steady();
      return;
    }
    if (status_.stopped_version && *status_.stopped_version == v) {
      if (Canary()) {
        AllToStable();
        ClearCanary();
      }
      Steady();
      return;
    }
    if (status_.previous_version && *status_.previous_version == v) {
      // spec.model went back to the warm previous version (a Git revert):
      // that is a rollback, with no canary steps.
      if (!SwitchToPrevious("spec.model is the previous version " + v + " again")) {
        status_.message = "rolling back to " + v + " once it has a ready replica";
        Wake(resync_hint_);
      }
      return;
    }
    if (!buildable.ok()) {
      if (Canary()) {
        AllToStable();
        ClearCanary();
      }
      status_.phase = "Degraded";
      status_.message = "cannot serve " + v + ": " + buildable.message() + "; " +
                        *status_.stable_version + " keeps all traffic";
      SetCondition(status_, "Degraded", true, "InvalidModel", status_.message.value(), now_text_,
                   Generation());
      return;
    }
    if (!status_.traffic || status_.traffic->empty()) {
      // The stable version never served (it never had a ready pod): there is
      // nothing to compare a canary with, so the new version replaces it.
      Note(runtime::EventType::kNormal, "Replaced",
           *status_.stable_version + " never served; " + v + " replaces it without a canary");
      ClearCanary();
      status_.stable_version = v;
      status_.stable_uri = spec_.model.uri;
      Steady();
      return;
    }
    if (!Canary() || *status_.canary_version != v) {
      if (Canary()) {
        AllToStable();
        EndBackground("Inconclusive", "ended unfinished: the canary was replaced by " + v);
        Note(runtime::EventType::kNormal, "RolloutReplaced",
             "the canary " + *status_.canary_version + " is replaced by " + v);
      }
      if (status_.analysis_runs) {
        // A retried version is scored again unless its gate passed.
        std::erase_if(*status_.analysis_runs, [&](const v1::AnalysisRun& r) {
          return r.name == GateRunName(v) && r.phase != "Successful";
        });
      }
      status_.canary_version = v;
      status_.current_step = promote_now_ ? static_cast<int32_t>(steps_.size()) : 0;
      status_.canary_weight = 0;
      status_.step_started_at = FormatRfc3339(now_, 3);
      Note(runtime::EventType::kNormal, "RolloutStarted",
           *status_.stable_version + " → " + v + " in " + std::to_string(steps_.size()) + " step" +
               (steps_.size() == 1 ? "" : "s"));
    }
    Advance();
  }

  v1::ModelDeploymentStatus& mutable_status() { return status_; }
  const std::vector<Event>& events() const { return events_; }
  std::optional<milliseconds> wake() const { return wake_; }
  // The quality gate Job that should exist now (one whose run goes on), if any.
  const std::optional<json>& gate_job() const { return gate_job_; }
  // What the gates read: the pod of each existing gate Job, by the Job's name.
  void SetGatePods(std::map<std::string, json> pods) { gate_pods_ = std::move(pods); }

  // The next weight the canary is to take (its current one once no step
  // raises it), to size it before it takes that weight.
  int32_t UpcomingWeight() const {
    if (!Canary()) return 0;
    const size_t from = static_cast<size_t>(std::max(0, status_.current_step.value_or(0)));
    for (size_t i = from; i < steps_.size(); ++i) {
      if (steps_[i].set_weight) return *steps_[i].set_weight;
    }
    return from >= steps_.size() ? 100 : status_.canary_weight.value_or(0);
  }
  // Replicas the canary needs to take `weight` percent: its share of
  // spec.replicas, rounded up, and at least one.
  int32_t CanaryReplicas(int32_t weight) const {
    if (weight >= 100) return std::max(1, replicas_);
    return std::max(1, (replicas_ * weight + 99) / 100);
  }
  int32_t replicas() const { return replicas_; }

 private:
  bool Canary() const { return status_.canary_version && !status_.canary_version->empty(); }
  int32_t Ready(const std::string& version) const {
    auto it = ready_.find(version);
    return it == ready_.end() ? 0 : it->second;
  }
  // "; <why version's pods are not ready>", or "".
  std::string Trouble(const std::string& version) const {
    auto it = trouble_.find(version);
    return it == trouble_.end() ? "" : "; " + it->second;
  }
  std::optional<int64_t> Generation() const {
    return md_.metadata.contains("generation") && md_.metadata["generation"].is_number_integer()
               ? std::optional<int64_t>(md_.metadata["generation"].get<int64_t>())
               : std::nullopt;
  }
  void Note(runtime::EventType type, const std::string& reason, const std::string& message) {
    events_.push_back({type, reason, message});
  }
  void Wake(milliseconds after) {
    after = std::max(after, milliseconds(1));
    if (!wake_ || after < *wake_) wake_ = after;
  }

  // status.traffic: `a` gets `wa` percent, `b` (if named) `wb`.
  void SetTraffic(const std::string& a, int32_t wa, const std::string& b, int32_t wb) {
    std::vector<v1::TrafficWeight> t{{a, wa}};
    if (!b.empty()) t.push_back({b, wb});
    status_.traffic = t;
  }
  void AllToStable() {
    SetTraffic(*status_.stable_version, 100, "", 0);
    status_.canary_weight = 0;
  }
  // Clears the canary; a background analysis still running ends without a
  // verdict (Promote ends it first, as Successful).
  void ClearCanary(const std::string& why = "the rollout stopped") {
    EndBackground("Inconclusive", "ended unfinished: " + why);
    status_.canary_version.reset();
    status_.canary_weight = 0;
    status_.current_step.reset();
    status_.step_started_at.reset();
  }
  void Fail(const std::string& message) {
    status_.phase = "Degraded";
    status_.message = message;
    SetCondition(status_, "Degraded", true, "InvalidModel", message, now_text_, Generation());
  }

  // The previous version goes once its warm window has passed.
  void ExpirePrevious() {
    if (!status_.previous_version) return;
    auto at = TimeOf(status_.previous_scale_down_at);
    if (at && now_ < *at) {
      Wake(std::chrono::ceil<milliseconds>(*at - now_));
      return;
    }
    Note(runtime::EventType::kNormal, "ScaledDown",
         "the previous version " + *status_.previous_version +
             " is scaled down: its scaleDownDelay has passed");
    status_.previous_version.reset();
    status_.previous_uri.reset();
    status_.previous_scale_down_at.reset();
  }

  // All traffic to the warm previous version, which becomes the stable one;
  // false (nothing changed) when it has no ready pod.
  bool SwitchToPrevious(const std::string& why) {
    const std::string previous = *status_.previous_version;
    if (Ready(previous) < 1) return false;
    const std::string from = *status_.stable_version;
    SetTraffic(previous, 100, "", 0);
    if (spec_.model.version != previous) status_.stopped_version = spec_.model.version;
    status_.stable_version = previous;
    status_.stable_uri = status_.previous_uri;
    status_.previous_version.reset();
    status_.previous_uri.reset();
    status_.previous_scale_down_at.reset();
    ClearCanary();
    status_.rollbacks = status_.rollbacks.value_or(0) + 1;
    status_.phase = "RolledBack";
    status_.message = "rolled back from " + from + " to " + previous + ": " + why;
    SetCondition(status_, "RolledBack", true, "Rollback", status_.message.value(), now_text_,
                 Generation());
    SetCondition(status_, "Progressing", false, "RolledBack", status_.message.value(), now_text_,
                 Generation());
    Note(runtime::EventType::kWarning, "RolledBack", status_.message.value());
    return true;
  }

  // Stops the canary: all traffic to the stable version, the canary's
  // version not rolled out again until spec.model or the action changes.
  void StopCanary(const std::string& phase, const std::string& reason, const std::string& message,
                  bool count_rollback) {
    AllToStable();
    status_.stopped_version = *status_.canary_version;
    ClearCanary("the rollout stopped (" + reason + ")");
    status_.phase = phase;
    status_.message = message;
    if (count_rollback) status_.rollbacks = status_.rollbacks.value_or(0) + 1;
    SetCondition(status_, phase == "Degraded" ? "Degraded" : "RolledBack", true, reason, message,
                 now_text_, Generation());
    SetCondition(status_, "Progressing", false, reason, message, now_text_, Generation());
    Note(runtime::EventType::kWarning, reason, message);
  }

  // spec.rollout.action, acted on once when it changes.
  void HandleAction() {
    const std::string action =
        spec_.rollout ? spec_.rollout->action.value_or("Continue") : "Continue";
    if (action == status_.handled_action.value_or("Continue")) return;
    const std::string& v = spec_.model.version;
    bool done = true;
    if (action == "Promote") {
      if (Canary()) {
        status_.current_step = static_cast<int32_t>(steps_.size());
        status_.step_started_at = FormatRfc3339(now_, 3);
        EndBackground("Successful", "ended by rollout.action Promote");
        Note(runtime::EventType::kNormal, "PromoteRequested",
             "rollout.action Promote: " + *status_.canary_version +
                 " skips the remaining steps and takes all traffic once it is fully ready");
      } else if (status_.stopped_version && *status_.stopped_version == v) {
        status_.stopped_version.reset();
        promote_now_ = true;
      }
    } else if (action == "Abort") {
      if (Canary()) {
        StopCanary("Aborted", "Aborted",
                   "rollout.action Abort: " + *status_.canary_version + " stopped at step " +
                       std::to_string(status_.current_step.value_or(0)) + "; " +
                       *status_.stable_version + " takes all traffic",
                   false);
      }
    } else if (action == "Rollback") {
      if (status_.previous_version) {
        done = SwitchToPrevious("rollout.action Rollback");
        if (!done) {
          action_message_ = "rollout.action Rollback waits for the previous version " +
                            *status_.previous_version + " to have a ready replica";
        }
      } else if (Canary()) {
        StopCanary("RolledBack", "RolledBack",
                   "rollout.action Rollback: " + *status_.canary_version + " stopped; " +
                       *status_.stable_version + " takes all traffic",
                   true);
      } else {
        Note(runtime::EventType::kWarning, "RollbackImpossible",
             "rollout.action Rollback: no previous version is warm (scaleDownDelay has passed "
             "or nothing was promoted); change spec.model to roll back through a canary");
      }
    } else if (action == "Continue") {
      if (status_.stopped_version && *status_.stopped_version == v) {
        status_.stopped_version.reset();
        Note(runtime::EventType::kNormal, "RolloutRetried",
             "rollout.action Continue: " + v + " is rolled out again from the first step");
      }
    }
    if (done) {
      status_.handled_action = action;
      status_.handled_action_generation = Generation();
    }
  }

  // No canary: the stable version serves everything once it has a ready pod.
  void Steady() {
    const std::string& stable = *status_.stable_version;
    const bool stopped = status_.stopped_version && !status_.stopped_version->empty() &&
                         *status_.stopped_version == spec_.model.version;
    const bool has_traffic = status_.traffic && !status_.traffic->empty();
    if (!has_traffic || status_.traffic->front().version != stable) {
      if (Ready(stable) < 1) {
        status_.phase = "Progressing";
        status_.message = "waiting for a ready replica of " + stable + " before it takes traffic" +
                          Trouble(stable);
        SetCondition(status_, "Available", false, "NoReadyReplica", status_.message.value(),
                     now_text_, Generation());
        Wake(resync_hint_);
        return;
      }
      SetTraffic(stable, 100, "", 0);
      Note(runtime::EventType::kNormal, "Available", stable + " takes all traffic");
    }
    status_.canary_weight = 0;
    if (!stopped || !status_.phase) {
      status_.phase = "Healthy";
      status_.message = stable + " serves all traffic" +
                        (status_.previous_version ? "; " + *status_.previous_version +
                                                        " stays warm for a rollback until " +
                                                        status_.previous_scale_down_at.value_or("")
                                                  : "");
      SetCondition(status_, "Degraded", false, "Healthy", "", now_text_, Generation());
    }
    SetCondition(status_, "Available", Ready(stable) > 0,
                 Ready(stable) > 0 ? "Serving" : "NoReadyReplica",
                 std::to_string(Ready(stable)) + " of " + std::to_string(replicas_) + " " + stable +
                     " replicas ready",
                 now_text_, Generation());
    SetCondition(status_, "Progressing", false, "NoRollout", "", now_text_, Generation());
  }

  void NextStep() {
    status_.current_step = status_.current_step.value_or(0) + 1;
    status_.step_started_at = FormatRfc3339(now_, 3);
  }

  // Walks the steps from status.currentStep as far as they go now.
  void Advance() {
    const std::string canary = *status_.canary_version;
    const std::string stable = *status_.stable_version;
    const auto started = TimeOf(status_.step_started_at).value_or(now_);
    SetCondition(status_, "Progressing", true, "Canary",
                 stable + " → " + canary + ", step " +
                     std::to_string(status_.current_step.value_or(0)) + " of " +
                     std::to_string(steps_.size()),
                 now_text_, Generation());
    status_.phase = "Progressing";
    // The quality gate, before the canary's first weight.
    if (spec_.analysis && spec_.analysis->quality_gate && status_.current_step.value_or(0) == 0 &&
        status_.canary_weight.value_or(0) == 0 && !Gate(-1)) {
      return;
    }
    // A background analysis measures whatever step the rollout is at.
    if (!Background()) return;
    for (size_t guard = 0; guard <= steps_.size(); ++guard) {
      const size_t i = static_cast<size_t>(std::max(0, status_.current_step.value_or(0)));
      const std::string at = "step " + std::to_string(i);
      const auto step_started = guard == 0 ? started : now_;
      if (i >= steps_.size()) {
        if (!BackgroundHasEvidence()) return;
        Promote();
        return;
      }
      const v1::CanaryStep& step = steps_[i];
      if (step.set_weight) {
        const int32_t w = *step.set_weight;
        const int32_t need = CanaryReplicas(w);
        if (!CanaryReady(need, step_started, at + ": ",
                         "before it takes " + std::to_string(w) + "% of the traffic")) {
          return;
        }
        status_.canary_weight = w;
        SetTraffic(stable, 100 - w, canary, w);
        Note(runtime::EventType::kNormal, "SetWeight",
             at + ": " + canary + " takes " + std::to_string(w) + "% of the traffic");
        NextStep();
        continue;
      }
      if (step.pause) {
        if (!step.pause->duration) {
          status_.phase = "Paused";
          status_.message = at + ": paused with " + canary + " at " +
                            std::to_string(status_.canary_weight.value_or(0)) +
                            "% until spec.rollout.action is Promote";
          return;
        }
        const milliseconds d = DurationOr(step.pause->duration, milliseconds(0));
        if (now_ < step_started + d) {
          status_.phase = "Paused";
          const auto left = std::chrono::ceil<milliseconds>(step_started + d - now_);
          status_.message = at + ": paused with " + canary + " at " +
                            std::to_string(status_.canary_weight.value_or(0)) + "% for " +
                            Seconds(left) + " more";
          Wake(left);
          return;
        }
        NextStep();
        continue;
      }
      if (step.analysis && step.analysis->background.value_or(false)) {
        StartBackground(static_cast<int32_t>(i));
        if (!Background()) return;  // Its first measurement may fail it already.
        NextStep();
        continue;
      }
      if (step.quality_gate) {
        if (!Gate(static_cast<int32_t>(i))) return;
        NextStep();
        continue;
      }
      if (step.analysis) {
        const milliseconds d = DurationOr(step.analysis->duration, std::chrono::minutes(1));
        if (!Analyse(static_cast<int32_t>(i), step_started, d)) return;
        NextStep();
        continue;
      }
      NextStep();  // A step with nothing set (the schema forbids it): skipped.
    }
  }

  // The quality gate's run at canary step `step` (-1: the gate before any
  // traffic): true once it has passed. While it runs, its Job is wanted
  // (gate_job()). The first gate is looked up by name, so a version retried
  // after its gate passed is not scored again; a step's gate by name and the
  // step's start, so every rollout that reaches the step scores it anew.
  bool Gate(int32_t step) {
    const std::string canary = *status_.canary_version;
    const std::string stable = *status_.stable_version;
    const std::string at = step < 0 ? "step 0" : "step " + std::to_string(step);
    if (!spec_.analysis || !spec_.analysis->quality_gate) {
      StopCanary("Degraded", "QualityGateFailed",
                 at +
                     ": a qualityGate step needs spec.analysis.qualityGate (the evaluation set "
                     "and the allowed regression); " +
                     canary + " stopped, " + stable + " takes all traffic",
                 true);
      return false;
    }
    const std::string name =
        step < 0 ? GateRunName(canary) : StepGateRunName(canary, static_cast<size_t>(step));
    const std::string started_text = status_.step_started_at.value_or(FormatRfc3339(now_, 3));
    if (!status_.analysis_runs) status_.analysis_runs.emplace();
    v1::AnalysisRun* found = FindRun(name, step < 0 ? nullptr : &started_text);
    if (found != nullptr && found->phase == "Successful") return true;
    if (found == nullptr) {
      v1::AnalysisRun run;
      run.name = name;
      run.step = std::max(0, step);
      run.phase = "Running";
      run.started_at = step < 0 ? FormatRfc3339(now_, 3) : started_text;
      AddRun(std::move(run));
      found = &status_.analysis_runs->back();
    }
    v1::AnalysisRun& run = *found;
    const GateVersions versions{.canary = canary,
                                .canary_uri = spec_.model.uri,
                                .stable = stable,
                                .stable_uri = status_.stable_uri.value_or(""),
                                .step = step};
    StatusOr<json> job = BuildGateJob(md_, versions, volume_);
    GateVerdict verdict;
    if (!job.ok()) {
      verdict = {.phase = "Failed", .message = job.status().message(), .measurements = {}};
    } else {
      auto pod = gate_pods_.find(GateJobName(Str(md_.metadata, "name"), canary, step));
      verdict = JudgeGate(pod == gate_pods_.end() ? json() : pod->second, GateAtStep(md_, step),
                          FormatRfc3339(now_, 3));
    }
    run.message = verdict.message;
    if (verdict.phase == "Running") {
      gate_job_ = std::move(*job);
      status_.message = at + ": quality gate: " + verdict.message + " (" + canary + " against " +
                        stable + "), " +
                        (step < 0 ? "before " + canary + " takes any traffic"
                                  : "with " + canary + " at " +
                                        std::to_string(status_.canary_weight.value_or(0)) + "%");
      Wake(resync_hint_);
      return false;
    }
    run.phase = verdict.phase;
    run.finished_at = FormatRfc3339(now_, 3);
    run.measurements = verdict.measurements;
    if (verdict.phase == "Successful") {
      Note(runtime::EventType::kNormal, "QualityGatePassed",
           (step < 0 ? "" : at + ": ") + canary + " against " + stable + ": " + verdict.message);
      return true;
    }
    if (step < 0) {
      StopCanary("Degraded", "QualityGateFailed",
                 "quality gate failed: " + verdict.message + "; " + canary + " takes no traffic, " +
                     stable + " keeps all of it",
                 true);
    } else {
      StopCanary("Degraded", "QualityGateFailed",
                 "quality gate failed at " + at + ": " + verdict.message + "; " + canary +
                     " rolled back, " + stable + " takes all traffic",
                 true);
    }
    return false;
  }

  // The newest run named `name` (started at `*started`, when given), or null.
  v1::AnalysisRun* FindRun(const std::string& name, const std::string* started = nullptr) {
    if (!status_.analysis_runs) return nullptr;
    auto& runs = *status_.analysis_runs;
    for (auto it = runs.rbegin(); it != runs.rend(); ++it) {
      if (it->name == name && (started == nullptr || it->started_at.value_or("") == *started)) {
        return &*it;
      }
    }
    return nullptr;
  }
  // Appends `run` (newest last), dropping the oldest runs beyond the limit,
  // but never the background run in progress.
  void AddRun(v1::AnalysisRun run) {
    if (!status_.analysis_runs) status_.analysis_runs.emplace();
    auto& runs = *status_.analysis_runs;
    runs.push_back(std::move(run));
    while (runs.size() > kMaxAnalysisRuns) {
      const v1::AnalysisRun* keep =
          status_.background_analysis ? FindRun(*status_.background_analysis) : nullptr;
      runs.erase(runs.begin() + (keep == &runs.front() ? 1 : 0));
    }
  }

  // Measures every metric of spec.analysis into `run` when `interval` has
  // passed since its last measurement. Returns the time of its latest
  // measurement (none yet: nullopt) and, in `latest`, what was measured now
  // in words ("" when nothing was).
  std::optional<Clock::time_point> MeasureInto(v1::AnalysisRun& run,
                                               const v1::AnalysisSpec& analysis,
                                               milliseconds interval, std::string& latest) {
    const std::string canary = *status_.canary_version;
    if (!run.measurements) run.measurements.emplace();
    auto& ms = *run.measurements;
    std::optional<Clock::time_point> last;
    if (!ms.empty()) last = TimeOf(ms.back().time);
    const auto metrics = analysis.metrics.value_or(std::vector<v1::AnalysisMetric>{});
    if (metrics.empty() || (last && now_ < *last + interval)) return last;
    const int window_seconds = static_cast<int>(std::clamp<int64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(interval).count(), 1, 600));
    StatusOr<TrafficWindow> window =
        source_ != nullptr
            ? source_->Window(Str(md_.metadata, "namespace") + "/" + Str(md_.metadata, "name"),
                              window_seconds)
            : StatusOr<TrafficWindow>(Status::Unavailable("no metrics source is configured"));
    const std::string t = FormatRfc3339(now_, 3);
    for (const auto& metric : metrics) {
      MeasuredValue m =
          metric.prometheus
              ? MeasurePrometheus(
                    metric,
                    prometheus_ != nullptr
                        ? prometheus_->Query(metric.prometheus->address,
                                             ExpandQuery(metric.prometheus->query, canary))
                        : StatusOr<std::optional<double>>(
                              Status::Unavailable("no Prometheus source is configured")),
                    t)
              : Measure(metric, window, canary, *status_.stable_version, t);
      ms.push_back(m.measurement);
      latest += (latest.empty() ? "" : "; ") + m.why;
    }
    while (ms.size() > kMaxMeasurements) ms.erase(ms.begin());
    return now_;
  }

  v1::AnalysisSpec AnalysisOptions() const { return spec_.analysis.value_or(v1::AnalysisSpec{}); }
  // spec.analysis as the analysis step `step` runs it: only the metrics its
  // `metrics` names, when it names some (a CEL rule keeps them among
  // spec.analysis.metrics; one that is not there is not measured).
  v1::AnalysisSpec AnalysisAt(int32_t step) const {
    v1::AnalysisSpec analysis = AnalysisOptions();
    const auto i = static_cast<size_t>(std::max(step, 0));
    if (i >= steps_.size() || !steps_[i].analysis || !steps_[i].analysis->metrics ||
        !analysis.metrics) {
      return analysis;
    }
    const std::vector<std::string>& names = *steps_[i].analysis->metrics;
    std::erase_if(*analysis.metrics, [&](const v1::AnalysisMetric& m) {
      return std::find(names.begin(), names.end(), m.name) == names.end();
    });
    return analysis;
  }
  milliseconds Interval() const {
    return std::max(milliseconds(1000),
                    DurationOr(AnalysisOptions().interval, std::chrono::seconds(30)));
  }
  // A metric of `analysis` without one successful measurement in `ms` (its
  // name), or "".
  std::string Unmeasured(const std::vector<v1::Measurement>& ms,
                         const v1::AnalysisSpec& analysis) const {
    for (const auto& metric : analysis.metrics.value_or(std::vector<v1::AnalysisMetric>{})) {
      const bool measured = std::any_of(ms.begin(), ms.end(), [&](const v1::Measurement& m) {
        return m.metric == metric.name && m.phase == "Successful";
      });
      if (!measured) return metric.name;
    }
    return "";
  }

  // Starts the background analysis at step `step` (at the step's start),
  // ending the one in progress, if any: one background analysis at a time.
  void StartBackground(int32_t step) {
    EndBackground("Successful", "ended at step " + std::to_string(step) +
                                    ", where a new background analysis starts");
    v1::AnalysisRun run;
    run.name = *status_.canary_version + "-step" + std::to_string(step);
    run.step = step;
    run.background = true;
    run.phase = "Running";
    run.started_at = status_.step_started_at.value_or(FormatRfc3339(now_, 3));
    run.measurements = std::vector<v1::Measurement>{};
    status_.background_analysis = run.name;
    AddRun(std::move(run));
    Note(runtime::EventType::kNormal, "AnalysisStarted",
         "step " + std::to_string(step) + ": a background analysis of " + *status_.canary_version +
             " measures every " + Seconds(Interval()) + " until the rollout completes");
  }

  // Ends the background analysis in progress, if any: a Running one as
  // `phase` with `why` (and its count of measurements) as its message.
  void EndBackground(const std::string& phase, const std::string& why) {
    if (!status_.background_analysis) return;
    v1::AnalysisRun* run = FindRun(*status_.background_analysis);
    status_.background_analysis.reset();
    if (run == nullptr || run->phase != "Running") return;
    const size_t n = run->measurements ? run->measurements->size() : 0;
    run->phase = phase;
    run->finished_at = now_text_;
    run->message = why + " (" + std::to_string(n) + " measurement" + (n == 1 ? "" : "s") +
                   (phase == "Successful" ? ", none failed beyond failureLimit)" : ")");
  }

  // The background analysis in progress, measured if its interval has
  // passed and judged: false when the rollout must not go on, because it
  // failed (the canary is stopped as by a failed blocking analysis) or is
  // inconclusive (paused until Promote or Abort).
  bool Background() {
    if (!status_.background_analysis) return true;
    v1::AnalysisRun* found = FindRun(*status_.background_analysis);
    if (found == nullptr || (found->phase != "Running" && found->phase != "Inconclusive")) {
      status_.background_analysis.reset();
      return true;
    }
    v1::AnalysisRun& run = *found;
    const std::string canary = *status_.canary_version;
    const std::string at = "step " + std::to_string(status_.current_step.value_or(0));
    const std::string from_step = "from step " + std::to_string(run.step.value_or(0));
    const std::string from = "the background analysis of " + canary + " (" + from_step + ")";
    const std::string paused = "; set spec.rollout.action to Promote to go on or Abort to stop";
    if (run.phase == "Inconclusive") {
      status_.phase = "Paused";
      status_.message =
          at + ": " + from + " is inconclusive (" + run.message.value_or("") + ")" + paused;
      return false;
    }
    const v1::AnalysisSpec analysis = AnalysisAt(run.step.value_or(0));
    const milliseconds interval = Interval();
    std::string latest;
    const auto last = MeasureInto(run, analysis, interval, latest);
    const AnalysisVerdict verdict = Judge(*run.measurements, analysis);
    if (verdict.phase == "Failed") {
      run.phase = "Failed";
      run.finished_at = now_text_;
      run.message = verdict.message;
      StopCanary("Degraded", "AnalysisFailed",
                 "analysis failed at " + at + " (background, " + from_step +
                     "): " + verdict.message + "; " + canary + " rolled back, " +
                     *status_.stable_version + " takes all traffic",
                 true);
      return false;
    }
    if (verdict.phase == "Inconclusive") {
      run.phase = "Inconclusive";
      run.finished_at = now_text_;
      run.message = verdict.message;
      status_.phase = "Paused";
      status_.message = at + ": " + from + " is inconclusive (" + verdict.message + ")" + paused;
      Note(runtime::EventType::kWarning, "AnalysisInconclusive", status_.message.value());
      return false;
    }
    if (!latest.empty()) run.message = latest;
    if (last) Wake(std::chrono::ceil<milliseconds>(*last + interval - now_));
    return true;
  }

  // After the last step, before the promotion: the background analysis in
  // progress must have had one successful measurement of every metric (no
  // traffic to judge is no pass, as for a blocking analysis). If not, it is
  // Inconclusive and the rollout pauses.
  bool BackgroundHasEvidence() {
    if (!status_.background_analysis) return true;
    v1::AnalysisRun* run = FindRun(*status_.background_analysis);
    if (run == nullptr || run->phase != "Running") return true;
    const std::string missing =
        Unmeasured(run->measurements.value_or(std::vector<v1::Measurement>{}),
                   AnalysisAt(run->step.value_or(0)));
    if (missing.empty()) return true;
    run->phase = "Inconclusive";
    run->finished_at = now_text_;
    run->message = missing + ": no successful measurement since step " +
                   std::to_string(run->step.value_or(0)) +
                   " (no traffic, or the source did not answer)";
    status_.phase = "Paused";
    status_.message = "all steps done: the background analysis of " + *status_.canary_version +
                      " (from step " + std::to_string(run->step.value_or(0)) +
                      ") is inconclusive (" + run->message.value() +
                      "); set spec.rollout.action to Promote to go on or Abort to stop";
    Note(runtime::EventType::kWarning, "AnalysisInconclusive", status_.message.value());
    return false;
  }

  // The analysis run of step `step`: a measurement every interval until
  // `duration` has passed since `started`. True when it passed.
  bool Analyse(int32_t step, Clock::time_point started, milliseconds duration) {
    const std::string canary = *status_.canary_version;
    const v1::AnalysisSpec analysis = AnalysisAt(step);
    const milliseconds interval = Interval();
    const std::string name = canary + "-step" + std::to_string(step);
    const std::string started_text = status_.step_started_at.value_or(FormatRfc3339(now_, 3));
    v1::AnalysisRun* found = FindRun(name, &started_text);
    if (found == nullptr) {
      v1::AnalysisRun run;
      run.name = name;
      run.step = step;
      run.phase = "Running";
      run.started_at = started_text;
      run.measurements = std::vector<v1::Measurement>{};
      AddRun(std::move(run));
      found = &status_.analysis_runs->back();
    }
    v1::AnalysisRun& run = *found;
    if (run.phase == "Inconclusive") {
      status_.phase = "Paused";
      status_.message = "step " + std::to_string(step) + ": the analysis of " + canary +
                        " is inconclusive (" + run.message.value_or("") +
                        "); set spec.rollout.action to Promote to go on or Abort to stop";
      return false;
    }
    std::string latest;
    const std::optional<Clock::time_point> last = MeasureInto(run, analysis, interval, latest);
    const auto& ms = *run.measurements;
    const auto metrics = analysis.metrics.value_or(std::vector<v1::AnalysisMetric>{});
    const AnalysisVerdict verdict = Judge(ms, analysis);
    if (verdict.phase == "Failed") {
      run.phase = "Failed";
      run.finished_at = now_text_;
      run.message = verdict.message;
      StopCanary("Degraded", "AnalysisFailed",
                 "analysis failed at step " + std::to_string(step) + ": " + verdict.message + "; " +
                     canary + " rolled back, " + *status_.stable_version + " takes all traffic",
                 true);
      return false;
    }
    if (verdict.phase == "Inconclusive") {
      run.phase = "Inconclusive";
      run.finished_at = now_text_;
      run.message = verdict.message;
      status_.phase = "Paused";
      status_.message = "step " + std::to_string(step) + ": the analysis of " + canary +
                        " is inconclusive (" + verdict.message +
                        "); set spec.rollout.action to Promote to go on or Abort to stop";
      Note(runtime::EventType::kWarning, "AnalysisInconclusive", status_.message.value());
      return false;
    }
    if (now_ >= started + duration) {
      // No evidence is no pass: a metric without one successful measurement
      // (no traffic all along) leaves the run inconclusive.
      if (const std::string missing = Unmeasured(ms, analysis); !missing.empty()) {
        run.phase = "Inconclusive";
        run.finished_at = now_text_;
        run.message = missing + ": no successful measurement in the step's " + Seconds(duration) +
                      " (no traffic, or the source did not answer)";
        status_.phase = "Paused";
        status_.message = "step " + std::to_string(step) + ": the analysis of " + canary +
                          " is inconclusive (" + run.message.value() +
                          "); set spec.rollout.action to Promote to go on or Abort to stop";
        Note(runtime::EventType::kWarning, "AnalysisInconclusive", status_.message.value());
        return false;
      }
      run.phase = "Successful";
      run.finished_at = now_text_;
      run.message = std::to_string(ms.size()) + " measurements, every metric within bounds";
      Note(runtime::EventType::kNormal, "AnalysisPassed",
           "step " + std::to_string(step) + ": " + canary + ": " + run.message.value());
      return true;
    }
    if (!latest.empty()) run.message = latest;
    status_.message = "step " + std::to_string(step) + ": analysing " + canary + " at " +
                      std::to_string(status_.canary_weight.value_or(0)) + "% (" +
                      std::to_string(ms.size()) + " measurements; " +
                      Seconds(std::chrono::ceil<milliseconds>(started + duration - now_)) +
                      " left)";
    milliseconds next = std::chrono::ceil<milliseconds>(started + duration - now_);
    if (!metrics.empty() && last) {
      next = std::min(next, std::chrono::ceil<milliseconds>(*last + interval - now_));
    }
    Wake(next);
    return false;
  }

  // Whether the canary has `need` ready replicas. If not, says so in the
  // message (`at` + what waits + `then`) and waits, until the progress
  // deadline (counted from `since`, the step's start) has passed: then the
  // canary is stopped as Degraded. It took no traffic meanwhile.
  bool CanaryReady(int32_t need, Clock::time_point since, const std::string& at,
                   const std::string& then) {
    const std::string canary = *status_.canary_version;
    if (Ready(canary) >= need) return true;
    const std::string replicas = std::to_string(need) + " ready replica" + (need == 1 ? "" : "s") +
                                 " (" + std::to_string(Ready(canary)) + " now)";
    if (now_ >= since + progress_deadline_) {
      StopCanary("Degraded", "ProgressDeadlineExceeded",
                 at + canary + " did not have " + replicas + " within the progress deadline (" +
                     Seconds(progress_deadline_) + ")" + Trouble(canary) + "; " +
                     *status_.stable_version + " keeps all traffic",
                 /*count_rollback=*/true);
      return false;
    }
    status_.message =
        at + "waiting for " + canary + " to have " + replicas + " " + then + Trouble(canary);
    Wake(
        std::min(resync_hint_, std::chrono::ceil<milliseconds>(since + progress_deadline_ - now_)));
    return false;
  }

  // After the last step: the canary, fully scaled and ready, takes all
  // traffic; the old stable version stays warm as the previous one.
  void Promote() {
    const std::string canary = *status_.canary_version;
    const std::string stable = *status_.stable_version;
    const int32_t need = CanaryReplicas(100);
    if (!CanaryReady(need, TimeOf(status_.step_started_at).value_or(now_),
                     "all steps done: ", "before it takes all traffic")) {
      return;
    }
    SetTraffic(canary, 100, "", 0);
    status_.previous_version = stable;
    status_.previous_uri = status_.stable_uri;
    status_.previous_scale_down_at =
        FormatRfc3339(now_ + std::chrono::duration_cast<Clock::duration>(scale_down_delay_), 3);
    status_.stable_version = canary;
    status_.stable_uri = spec_.model.uri;
    EndBackground("Successful", "ended at the promotion of " + canary);
    ClearCanary();
    status_.current_step = static_cast<int32_t>(steps_.size());
    status_.phase = "Healthy";
    status_.message = canary + " promoted and serves all traffic; " + stable +
                      " stays warm for a rollback until " + *status_.previous_scale_down_at;
    SetCondition(status_, "Progressing", false, "Promoted", status_.message.value(), now_text_,
                 Generation());
    SetCondition(status_, "Degraded", false, "Healthy", "", now_text_, Generation());
    SetCondition(status_, "RolledBack", false, "Promoted", "", now_text_, Generation());
    Note(runtime::EventType::kNormal, "Promoted", status_.message.value());
    Wake(std::chrono::ceil<milliseconds>(scale_down_delay_));
  }

  const v1::ModelDeployment& md_;
  const v1::ModelDeploymentSpec& spec_;
  v1::ModelDeploymentStatus status_;
  const std::map<std::string, int32_t> ready_;
  const std::map<std::string, std::string> trouble_;
  const Clock::time_point now_;
  const std::string now_text_;
  MetricsSource* source_;
  PrometheusSource* prometheus_;
  std::vector<v1::CanaryStep> steps_;
  milliseconds scale_down_delay_{std::chrono::minutes(10)};
  milliseconds progress_deadline_{std::chrono::minutes(10)};
  int32_t replicas_ = 1;
  bool promote_now_ = false;
  std::string action_message_;
  // How soon to look again while waiting for pods (options.resync).
  const milliseconds resync_hint_;
  std::vector<Event> events_;
  std::optional<milliseconds> wake_;
  const trainingjob::SharedVolume& volume_;
  std::map<std::string, json> gate_pods_;
  std::optional<json> gate_job_;
};

// The Deployments and Services of `md` by version (only those it controls).
struct Owned {
  std::map<std::string, json> deployments;
  std::map<std::string, json> services;
};

bool ControlledBy(const json& obj, const std::string& uid) {
  for (const auto& ref : obj["metadata"].value("ownerReferences", json::array())) {
    if (ref.value("uid", "") == uid && ref.value("controller", false)) return true;
  }
  return false;
}

std::string UidLabelOf(const json& obj) {
  return obj["metadata"].value("labels", json::object()).value(api::kModelDeploymentUidLabel, "");
}

// A cluster the versions run in: the deployment's own, or a member.
struct Site {
  std::string cluster;  // The MemberCluster's name; "" for the deployment's own cluster.
  kube::Client* client = nullptr;
  // Objects there carry the deployment's UID as a label, not an owner
  // reference (owner references do not cross clusters).
  bool in_member = false;
};

// An object an earlier deployment of the same name left in a member.
struct Stale {
  kube::Client* client;
  const kube::Resource* resource;
  json object;
};

// The Deployments and Services of deployment `name` (UID `uid`) at `site`.
// In a member, those labelled with another UID go into `stale`.
StatusOr<Owned> ListOwned(const Site& site, const std::string& ns, const std::string& name,
                          const std::string& uid, std::vector<Stale>* stale) {
  Owned owned;
  const std::string selector = DeploymentSelector(name);
  for (auto [resource, into] : {std::pair{&kube::resources::kDeployments, &owned.deployments},
                                std::pair{&kube::resources::kServices, &owned.services}}) {
    KILN_ASSIGN_OR_RETURN(json list,
                          site.client->List(*resource, ns, {.label_selector = selector}));
    for (const auto& item : list["items"]) {
      if (site.in_member) {
        const std::string label = UidLabelOf(item);
        if (label.empty()) continue;  // Not kiln's.
        if (label != uid) {
          if (stale != nullptr) stale->push_back({site.client, resource, item});
          continue;
        }
      } else if (!ControlledBy(item, uid)) {
        continue;
      }
      const std::string version =
          item["metadata"].value("labels", json::object()).value(api::kModelVersionLabel, "");
      if (!version.empty()) (*into)[version] = item;
    }
  }
  return owned;
}

// Deletes what deployment `name` has in member `member`: with `uid`, only
// that incarnation's objects; with "", every incarnation's (the deployment
// is gone). True when there was nothing left to delete.
StatusOr<bool> DeleteInMember(kube::Client& member, const std::string& ns, const std::string& name,
                              const std::string& uid) {
  const std::string selector = DeploymentSelector(name) + "," + api::kModelDeploymentUidLabel +
                               (uid.empty() ? "" : "=" + uid);
  bool clean = true;
  for (const kube::Resource* r :
       {&kube::resources::kDeployments, &kube::resources::kServices, &kube::resources::kSecrets}) {
    KILN_ASSIGN_OR_RETURN(json list, member.List(*r, ns, {.label_selector = selector}));
    for (const auto& item : list["items"]) {
      clean = false;
      Status s = member
                     .Delete(*r, ns, Str(item["metadata"], "name"),
                             {.propagation_policy = "Background",
                              .precondition_uid = Str(item["metadata"], "uid")})
                     .status();
      if (!s.ok() && !kube::IsNotFound(s)) return s;
    }
  }
  return clean;
}

bool ConditionTrue(const json& obj, const std::string& type) {
  for (const auto& c : obj.value("status", json::object()).value("conditions", json::array())) {
    if (c.value("type", "") == type) return c.value("status", "") == "True";
  }
  return false;
}

}  // namespace

ModelDeploymentReconciler::ModelDeploymentReconciler(kube::Client& client,
                                                     runtime::EventRecorder* events,
                                                     ModelDeploymentReconcilerOptions options)
    : client_(client), events_(events), options_(std::move(options)) {}

StatusOr<runtime::Result> ModelDeploymentReconciler::Reconcile(const runtime::Context& ctx,
                                                               const runtime::Request& request) {
  (void)ctx;  // The client bounds every call by it (base/context.h).
  const auto& kMds = v1::kModelDeployments;
  auto got = client_.Get(kMds, request.ns, request.name);
  if (!got.ok()) {
    if (kube::IsNotFound(got.status())) {
      if (options_.metrics != nullptr) options_.metrics->SetPhase(request.ns, request.name, "");
      // What it ran in member clusters goes with it (no owner references
      // there): every connected member is swept; one that cannot be reached
      // now is swept when its pods' events wake this again.
      if (options_.members != nullptr) {
        Status first = Status::Ok();
        for (const std::string& name : options_.members->Names()) {
          if (name == options_.hub_member) continue;
          auto member = options_.members->Get(name);
          if (member == nullptr) continue;
          auto swept = DeleteInMember(member->client(), request.ns, request.name, "");
          if (!swept.ok() && first.ok()) first = swept.status();
        }
        if (!first.ok()) return first;
      }
      return runtime::Result{};
    }
    return got.status();
  }
  const json obj = std::move(*got);
  // Owner references delete the versions' objects with the deployment.
  if (obj["metadata"].contains("deletionTimestamp")) return runtime::Result{};
  v1::ModelDeployment md;
  try {
    md = obj.get<v1::ModelDeployment>();
  } catch (const std::exception& e) {
    return runtime::Terminal(
        Status::InvalidArgument(request.Key() + ": not a readable ModelDeployment: " + e.what()));
  }
  const std::string uid = Str(obj["metadata"], "uid");
  const std::string selector = DeploymentSelector(request.name);

  // 1. Where the versions run, and what runs there: each version's
  // Deployment and Service.
  const Site own{.cluster = "", .client = &client_, .in_member = false};
  std::vector<Site> serving;  // Where the live versions run.
  std::vector<Site> leaving;  // Where what kiln made goes.
  std::vector<v1::ServingCluster> clusters;
  std::string no_site;  // Why no cluster serves, when none does.
  const placement::LabelSelector wanted =
      md.spec.cluster_selector ? placement::LabelSelectorFromApi(*md.spec.cluster_selector)
                               : placement::LabelSelector{};
  const bool to_members = !wanted.empty();
  // Member `name` (connected as `member`, or null) is being left: what kiln
  // made there goes (the operator's own cluster is cleaned as `own`).
  auto leave = [&](const std::string& name, const std::shared_ptr<fleet::Member>& member) {
    clusters.push_back({.name = name, .state = "Leaving"});
    if (member != nullptr && name != options_.hub_member) {
      leaving.push_back({.cluster = name, .client = &member->client(), .in_member = true});
    }
  };
  if (!to_members) {
    serving.push_back(own);
    // Serving here now (the selector gone or emptied): what the members
    // still hold goes, as from a member that no longer matches.
    if (md.status && md.status->clusters) {
      for (const v1::ServingCluster& c : *md.status->clusters) {
        leave(c.name, options_.members != nullptr ? options_.members->Get(c.name) : nullptr);
      }
    }
  } else if (options_.members == nullptr) {
    no_site = "spec.clusterSelector names member clusters, but this operator runs without them";
  } else {
    KILN_ASSIGN_OR_RETURN(json mcs, client_.List(v1::kMemberClusters, ""));
    bool own_serves = false;
    for (const auto& mc : mcs["items"]) {
      const std::string name = Str(mc["metadata"], "name");
      placement::Labels labels;
      const json mc_labels = mc["metadata"].value("labels", json::object());
      for (const auto& [k, v] : mc_labels.items()) {
        if (v.is_string()) labels[k] = v.get<std::string>();
      }
      auto member = options_.members->Get(name);
      const bool was_here =
          md.status && md.status->clusters &&
          std::any_of(md.status->clusters->begin(), md.status->clusters->end(),
                      [&](const v1::ServingCluster& c) { return c.name == name; });
      if (wanted.Matches(labels)) {
        const bool ready = member != nullptr && ConditionTrue(mc, "Ready");
        clusters.push_back({.name = name, .state = ready ? "Serving" : "Unreachable"});
        if (!ready) continue;
        if (name == options_.hub_member) {
          own_serves = true;
          serving.push_back({.cluster = name, .client = &client_, .in_member = false});
        } else {
          serving.push_back({.cluster = name, .client = &member->client(), .in_member = true});
        }
      } else if (was_here) {
        leave(name, member);
      }
    }
    // A MemberCluster that is gone leaves status.clusters: its connection
    // went with it, so what runs there cannot be reached (it is swept if it
    // comes back under that name).
    if (!own_serves) leaving.push_back(own);
    if (serving.empty()) {
      no_site = "no Ready member cluster matches spec.clusterSelector (" + wanted.ToString() + ")";
    }
  }
  std::vector<Owned> owned(serving.size());
  std::vector<Stale> stale;
  std::map<std::string, int32_t> ready;
  std::map<std::string, std::string> trouble;
  for (size_t i = 0; i < serving.size(); ++i) {
    const Site& site = serving[i];
    KILN_ASSIGN_OR_RETURN(owned[i], ListOwned(site, request.ns, request.name, uid, &stale));
    int32_t site_ready = 0;
    std::map<std::string, int32_t> here;
    for (const auto& [version, d] : owned[i].deployments) {
      here[version] = d.value("status", json::object()).value("readyReplicas", 0);
      site_ready += here[version];
      if (here[version] >= d.value("spec", json::object()).value("replicas", 0)) continue;
      if (trouble.count(version) > 0) continue;
      // Not all ready: the first pod's reason goes into the status message.
      auto pods = site.client->List(
          kube::resources::kPods, request.ns,
          {.label_selector = selector + "," + api::kModelVersionLabel + "=" + version});
      if (!pods.ok()) continue;  // Only the message's detail is lost.
      std::string why;
      const json* starting = nullptr;
      for (const auto& pod : (*pods)["items"]) {
        why = PodTrouble(pod);
        if (!why.empty()) break;
        if (starting == nullptr && PodStarting(pod)) starting = &pod;
      }
      // A pod that does not get past its start says why only in its Events
      // (a volume that cannot be mounted, a sandbox that cannot be made).
      if (why.empty() && starting != nullptr) {
        auto events = site.client->List(
            kube::resources::kEvents, request.ns,
            {.field_selector = "involvedObject.name=" + Str((*starting)["metadata"], "name")});
        if (events.ok()) {
          const std::vector<json> items = (*events)["items"];
          why = PodEventTrouble(*starting, items);
        }
      }
      if (!why.empty()) {
        trouble[version] = (site.cluster.empty() ? "" : "in " + site.cluster + ": ") + why;
      }
    }
    // Ready as far as it is ready everywhere: a version missing here has none.
    if (i == 0) {
      ready = here;
    } else {
      for (auto& [version, n] : ready) {
        auto it = here.find(version);
        n = std::min(n, it == here.end() ? 0 : it->second);
      }
    }
    for (auto& c : clusters) {
      if (c.name == site.cluster) c.ready_replicas = site_ready;
    }
  }
  if (!no_site.empty()) {
    for (const auto& v : {std::optional<std::string>(md.spec.model.version),
                          md.status ? md.status->stable_version : std::nullopt,
                          md.status ? md.status->canary_version : std::nullopt}) {
      if (v && !v->empty()) trouble[*v] = no_site;
    }
  }
  // What the clusters being left still hold; one that holds nothing more
  // leaves status.clusters now. Make before break: nothing goes from a
  // cluster being left while a version with weight has no ready pod where
  // it serves now (moving serving home from the members, say).
  bool weighted_ready = !serving.empty();
  if (md.status && md.status->traffic) {
    for (const v1::TrafficWeight& t : *md.status->traffic) {
      if (t.weight > 0 && (ready.count(t.version) == 0 || ready[t.version] < 1)) {
        weighted_ready = false;
      }
    }
  }
  std::vector<Site> to_clean;
  bool held_back = false;
  for (const Site& site : leaving) {
    bool clean = true;
    if (site.in_member) {
      const std::string held = selector + "," + api::kModelDeploymentUidLabel + "=" + uid;
      for (const kube::Resource* r : {&kube::resources::kDeployments, &kube::resources::kServices,
                                      &kube::resources::kSecrets}) {
        auto list = site.client->List(*r, request.ns, {.label_selector = held});
        // One that cannot be listed now is looked at again later.
        clean = clean && list.ok() && (*list)["items"].empty();
      }
    } else {
      KILN_ASSIGN_OR_RETURN(Owned here, ListOwned(site, request.ns, request.name, uid, nullptr));
      clean = here.deployments.empty() && here.services.empty();
    }
    if (clean) {
      std::erase_if(clusters, [&](const v1::ServingCluster& c) {
        return c.name == site.cluster && c.state == "Leaving";
      });
    } else if (weighted_ready) {
      to_clean.push_back(site);
    } else {
      held_back = true;
    }
  }
  // The router windows come from where the deployment serves.
  std::unique_ptr<MetricsSource> member_source;
  MetricsSource* metrics_source = options_.metrics_source;
  if (to_members) {
    std::vector<std::string> names;
    for (const Site& site : serving) {
      if (site.in_member) names.push_back(site.cluster);
    }
    if (options_.member_metrics && !names.empty()) member_source = options_.member_metrics(names);
    metrics_source = member_source.get();
  }

  // 2. Decide.
  auto build = [&](const std::string& version, const std::string& uri, int32_t replicas) {
    return BuildVersionWorkload(
        md, {.version = version, .uri = uri, .replicas = replicas, .volume = options_.volume});
  };
  const Status buildable = build(md.spec.model.version, md.spec.model.uri, 0).status();
  Rollout rollout(md, ready, trouble, options_.now(), metrics_source, options_.prometheus_source,
                  options_.resync, options_.volume);

  // The quality gate's Jobs (by name) and, for the canary in the status,
  // each of its Jobs' pod. Looked at only when a gate is configured or one
  // was running.
  const bool has_gate = md.spec.analysis && md.spec.analysis->quality_gate;
  bool gate_running = false;
  if (md.status && md.status->analysis_runs) {
    for (const auto& r : *md.status->analysis_runs) {
      gate_running = gate_running || (r.phase == "Running" && r.name.ends_with("-quality-gate"));
    }
  }
  std::map<std::string, json> gate_jobs;
  const std::string gate_selector = selector + "," + kQualityGateLabel;
  if (has_gate || gate_running) {
    KILN_ASSIGN_OR_RETURN(json jobs,
                          client_.List(kJobs, request.ns, {.label_selector = gate_selector}));
    for (const auto& job : jobs["items"]) {
      if (!ControlledBy(job, uid)) continue;
      gate_jobs[Str(job["metadata"], "name")] = job;
    }
  }
  if (has_gate && !gate_jobs.empty()) {
    const v1::ModelDeploymentStatus& before = md.status.value_or(v1::ModelDeploymentStatus{});
    const std::string canary = before.canary_version.value_or(md.spec.model.version);
    KILN_ASSIGN_OR_RETURN(json pods,
                          client_.List(kube::resources::kPods, request.ns,
                                       {.label_selector = gate_selector + "=" + canary}));
    // Only a current Job's pod: one of an earlier Job (of the same name) may
    // linger, and a Job being deleted is not read.
    std::map<std::string, json> gate_pods;
    for (const auto& [name, job] : gate_jobs) {
      if (job["metadata"].contains("deletionTimestamp")) continue;
      const std::string job_uid = Str(job["metadata"], "uid");
      for (const auto& p : pods["items"]) {
        if (ControlledBy(p, job_uid)) gate_pods[name] = p;
      }
    }
    rollout.SetGatePods(std::move(gate_pods));
  }
  rollout.Decide(buildable);
  v1::ModelDeploymentStatus& status = rollout.mutable_status();

  // The versions that run, and their sizes.
  struct Live {
    std::string uri;
    int32_t replicas;
  };
  std::map<std::string, Live> live;
  if (status.stable_version && status.stable_uri) {
    live[*status.stable_version] = {*status.stable_uri, rollout.replicas()};
  }
  if (status.previous_version && status.previous_uri) {
    live[*status.previous_version] = {*status.previous_uri, rollout.replicas()};
  }
  if (status.canary_version && !status.canary_version->empty()) {
    live[*status.canary_version] = {
        md.spec.model.uri, std::max(rollout.CanaryReplicas(rollout.UpcomingWeight()),
                                    rollout.CanaryReplicas(status.canary_weight.value_or(0)))};
  }
  int32_t replicas = 0, ready_total = 0;
  for (const auto& [version, l] : live) {
    replicas += l.replicas;
    ready_total += ready.count(version) > 0 ? ready[version] : 0;
  }
  if (to_members) {
    // Every Serving member runs every live version.
    replicas *= static_cast<int32_t>(serving.size());
    ready_total = 0;
    for (const auto& c : clusters) ready_total += c.ready_replicas.value_or(0);
  }
  status.replicas = replicas;
  status.ready_replicas = ready_total;
  status.selector = selector;
  if (!clusters.empty()) {
    std::sort(clusters.begin(), clusters.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    status.clusters = clusters;
  } else {
    status.clusters.reset();
  }
  status.observed_generation = obj["metadata"].contains("generation")
                                   ? std::optional<int64_t>(obj["metadata"]["generation"])
                                   : std::nullopt;

  // S3 credentials: no serving or gate pod is made or changed without them
  // (what runs keeps running, holding the Secret already). Secrets are not
  // watched: a held deployment looks again every resync.
  std::optional<s3access::SecretProblem> credentials_problem;
  std::optional<json> credentials_secret;  // The Secret, when it serves.
  if (md.spec.storage && md.spec.storage->s3) {
    const std::string& secret_name = md.spec.storage->s3->credentials_secret_ref.name;
    auto secret = client_.Get(kube::resources::kSecrets, request.ns, secret_name);
    if (!secret.ok() && !kube::IsNotFound(secret.status())) return secret.status();
    credentials_problem =
        s3access::CheckSecret(secret.ok() ? *secret : json(), request.ns, secret_name);
    if (!credentials_problem) credentials_secret = *secret;
    const std::string now_text = FormatRfc3339(options_.now());
    if (credentials_problem) {
      SetCondition(status, s3access::kCredentialsReadyCondition, false, credentials_problem->reason,
                   credentials_problem->message, now_text, status.observed_generation);
    } else {
      SetCondition(status, s3access::kCredentialsReadyCondition, true, "SecretFound",
                   "Secret " + request.ns + "/" + secret_name + " holds the S3 credentials",
                   now_text, status.observed_generation);
    }
  }
  const bool credentials_news = credentials_problem && [&] {
    if (!md.status || !md.status->conditions) return true;
    for (const auto& c : *md.status->conditions) {
      if (c.type == s3access::kCredentialsReadyCondition) {
        return c.status != "False" || c.message != credentials_problem->message;
      }
    }
    return true;
  }();

  // 3. The status first: a version loses its weight before its pods go.
  if (!md.status || status != *md.status) {
    json updated = obj;
    updated["status"] = status;
    Status written = client_.UpdateStatus(kMds, updated).status();
    // Someone changed the object since it was read (a new spec.rollout.action,
    // say): decide again on the new one at once, without an error's backoff.
    if (kube::IsConflict(written)) return runtime::Result{.requeue_after = milliseconds(1)};
    KILN_RETURN_IF_ERROR(written);
    if (options_.metrics != nullptr) {
      const int32_t before = md.status ? md.status->rollbacks.value_or(0) : 0;
      options_.metrics->CountRollbacks(request.ns, request.name,
                                       status.rollbacks.value_or(0) - before);
    }
  }
  if (options_.metrics != nullptr) {
    options_.metrics->SetPhase(request.ns, request.name, status.phase.value_or(""));
  }
  if (events_ != nullptr) {
    for (const auto& e : rollout.events()) events_->Record(obj, e.type, e.reason, e.message);
    if (credentials_news) {
      events_->Record(obj, runtime::EventType::kWarning, credentials_problem->reason,
                      credentials_problem->message);
    }
  }

  // With the Gateway API provider, the weights go into the HTTPRoute too,
  // before any version is scaled down (a route that cannot be written stops
  // the reconcile here, with every version still running).
  if (md.spec.traffic && md.spec.traffic->provider.value_or("Router") == "GatewayAPI" &&
      md.spec.traffic->gateway_api && status.traffic && !status.traffic->empty()) {
    const std::string route_name = md.spec.traffic->gateway_api->http_route;
    auto route = client_.Get(kHTTPRoutes, request.ns, route_name);
    if (!route.ok()) {
      if (events_ != nullptr && kube::IsNotFound(route.status())) {
        events_->Record(obj, runtime::EventType::kWarning, "HTTPRouteMissing",
                        "traffic.gatewayAPI.httpRoute " + route_name + " does not exist in " +
                            request.ns + "; its weights cannot be set");
      }
      return route.status();
    }
    const int32_t port =
        md.spec.serving ? md.spec.serving->port.value_or(8000) : static_cast<int32_t>(8000);
    // The deployment's Services without weight now: their backendRefs go.
    std::set<std::string> services;
    for (const Owned& o : owned) {
      for (const auto& [version, svc] : o.services) services.insert(Str(svc["metadata"], "name"));
    }
    auto changed = SetBackendWeights(*route, *status.traffic, request.name, port, services);
    if (!changed.ok()) {
      if (events_ != nullptr) {
        events_->Record(obj, runtime::EventType::kWarning, "HTTPRouteNoBackends",
                        changed.status().message() + "; its weights cannot be set");
      }
      return changed.status();
    }
    if (*changed) {
      Status updated = client_.Update(kHTTPRoutes, *route).status();
      if (kube::IsConflict(updated)) return runtime::Result{.requeue_after = milliseconds(1)};
      if (kube::IsInvalid(updated) && events_ != nullptr) {
        events_->Record(obj, runtime::EventType::kWarning, "HTTPRouteRejected",
                        "the API server rejected the weights for HTTPRoute " + route_name + ": " +
                            updated.message());
      }
      KILN_RETURN_IF_ERROR(updated);
    }
  }

  // 4. What an earlier deployment of the same name left in a member, and
  // what the clusters being left hold, goes.
  for (const Stale& st : stale) {
    Status s = st.client
                   ->Delete(*st.resource, request.ns, Str(st.object["metadata"], "name"),
                            {.propagation_policy = "Background",
                             .precondition_uid = Str(st.object["metadata"], "uid")})
                   .status();
    if (!s.ok() && !kube::IsNotFound(s)) return s;
  }
  std::optional<milliseconds> wake = rollout.wake();
  for (const Site& site : to_clean) {
    if (site.in_member) {
      KILN_RETURN_IF_ERROR(DeleteInMember(*site.client, request.ns, request.name, uid).status());
    } else {
      KILN_ASSIGN_OR_RETURN(Owned here, ListOwned(site, request.ns, request.name, uid, nullptr));
      for (auto [resource, objects] : {std::pair{&kube::resources::kDeployments, &here.deployments},
                                       std::pair{&kube::resources::kServices, &here.services}}) {
        for (const auto& [version, o] : *objects) {
          Status s = client_
                         .Delete(*resource, request.ns, Str(o["metadata"], "name"),
                                 {.propagation_policy = "Background",
                                  .precondition_uid = Str(o["metadata"], "uid")})
                         .status();
          if (!s.ok() && !kube::IsNotFound(s)) return s;
        }
      }
    }
    // Looked at again to drop it from status.clusters once all is gone.
    wake = std::min(wake.value_or(milliseconds(1000)), milliseconds(1000));
  }

  // 5. In each cluster it serves in, each live version's Deployment and
  // Service, as the status says.
  const auto now = options_.now();
  // How long a version that lost its weight keeps its pods.
  const milliseconds drain =
      md.spec.strategy && md.spec.strategy->canary
          ? DurationOr(md.spec.strategy->canary->drain_delay, options_.scale_down_grace)
          : options_.scale_down_grace;
  for (size_t i = 0; i < serving.size(); ++i) {
    const Site& site = serving[i];
    kube::Client& c = *site.client;
    if (site.in_member && !credentials_problem) {
      KILN_RETURN_IF_ERROR(fleet::EnsureNamespace(c, request.ns));
      if (credentials_secret) {
        KILN_RETURN_IF_ERROR(
            s3access::SyncCredentialsCopy(c, BuildCredentialsCopy(md, *credentials_secret),
                                          api::kModelDeploymentUidLabel, uid, "deployment"));
      }
    }
    for (const auto& [version, l] : live) {
      if (credentials_problem) break;
      auto workload = BuildVersionWorkload(md, {.version = version,
                                                .uri = l.uri,
                                                .replicas = l.replicas,
                                                .volume = options_.volume,
                                                .in_member = site.in_member});
      if (!workload.ok()) {
        log::Logger("modeldeployment")
            .Warn("cannot build a version's workload", {{"modelDeployment", request.Key()},
                                                        {"version", version},
                                                        {"error", workload.status().ToString()}});
        continue;
      }
      json& d = workload->deployment;
      const std::string hash = Hash(d["spec"]["template"]);
      d["metadata"]["annotations"][kTemplateHashAnnotation] = hash;
      auto have = owned[i].deployments.find(version);
      if (have == owned[i].deployments.end()) {
        Status s = c.Create(kube::resources::kDeployments, request.ns, d).status();
        if (!s.ok() && !kube::IsAlreadyExists(s)) return s;
      } else {
        const json& cur = have->second;
        const json annotations = cur["metadata"].value("annotations", json::object());
        const bool same = annotations.value(kTemplateHashAnnotation, "") == hash &&
                          !annotations.contains(kUnweightedSinceAnnotation) &&
                          cur.value("spec", json::object()).value("replicas", -1) == l.replicas;
        if (!same) {
          json next = cur;
          next["metadata"]["labels"] = d["metadata"]["labels"];
          next["metadata"]["annotations"][kTemplateHashAnnotation] = hash;
          // Live again (a retried version, say): no longer on its way out.
          next["metadata"]["annotations"].erase(kUnweightedSinceAnnotation);
          next["spec"]["replicas"] = l.replicas;
          next["spec"]["template"] = d["spec"]["template"];
          KILN_RETURN_IF_ERROR(c.Update(kube::resources::kDeployments, next).status());
        }
      }
      json& svc = workload->service;
      const std::string svc_hash = Hash(svc["spec"]);
      svc["metadata"]["annotations"][kTemplateHashAnnotation] = svc_hash;
      auto have_svc = owned[i].services.find(version);
      if (have_svc == owned[i].services.end()) {
        Status s = c.Create(kube::resources::kServices, request.ns, svc).status();
        if (!s.ok() && !kube::IsAlreadyExists(s)) return s;
      } else if (have_svc->second["metadata"]
                     .value("annotations", json::object())
                     .value(kTemplateHashAnnotation, "") != svc_hash) {
        json patch = {
            {"metadata",
             {{"labels", svc["metadata"]["labels"]},
              {"annotations", {{kTemplateHashAnnotation, svc_hash}}}}},
            {"spec", {{"selector", svc["spec"]["selector"]}, {"ports", svc["spec"]["ports"]}}}};
        KILN_RETURN_IF_ERROR(c.Patch(kube::resources::kServices, request.ns,
                                     Str(svc["metadata"], "name"), kube::PatchType::kMerge,
                                     patch.dump())
                                 .status());
      }
    }
    // Versions no longer live: their weight is already gone (written above).
    // Each keeps its pods for scale_down_grace after that (the time it lost
    // its weight is an annotation on its Deployment, so a restarted operator
    // counts on), so that every router replica has dropped it first.
    std::set<std::string> going;
    for (const auto& [version, d] : owned[i].deployments) {
      if (live.count(version) > 0) continue;
      const std::string since_text =
          d["metadata"].value("annotations", json::object()).value(kUnweightedSinceAnnotation, "");
      if (drain > milliseconds(0)) {
        if (since_text.empty()) {
          json patch = {{"metadata",
                         {{"annotations", {{kUnweightedSinceAnnotation, FormatRfc3339(now, 3)}}}}}};
          Status s = c.Patch(kube::resources::kDeployments, request.ns, Str(d["metadata"], "name"),
                             kube::PatchType::kMerge, patch.dump())
                         .status();
          if (!s.ok() && !kube::IsNotFound(s)) return s;
          wake = std::min(wake.value_or(drain), drain);
          continue;
        }
        auto since = TimeOf(since_text);
        const auto due = since.value_or(now) + drain;
        if (now < due) {
          const auto left = std::chrono::ceil<milliseconds>(due - now);
          wake = std::min(wake.value_or(left), left);
          continue;
        }
      }
      going.insert(version);
    }
    for (auto [resource, objects] :
         {std::pair{&kube::resources::kDeployments, &owned[i].deployments},
          std::pair{&kube::resources::kServices, &owned[i].services}}) {
      for (const auto& [version, o] : *objects) {
        if (live.count(version) > 0) continue;
        // A Service goes with its Deployment (or alone, when that is gone).
        if (going.count(version) == 0 && owned[i].deployments.count(version) > 0) continue;
        Status s = c.Delete(*resource, request.ns, Str(o["metadata"], "name"),
                            {.propagation_policy = "Background",
                             .precondition_uid = Str(o["metadata"], "uid")})
                       .status();
        if (!s.ok() && !kube::IsNotFound(s)) return s;
      }
    }
  }

  // The quality gate's Job while its run goes on; none otherwise.
  const std::optional<json>& gate_job = rollout.gate_job();
  const std::string gate_job_name = gate_job ? Str((*gate_job)["metadata"], "name") : "";
  if (gate_job && gate_jobs.count(gate_job_name) == 0 && !credentials_problem) {
    Status s = client_.Create(kJobs, request.ns, *gate_job).status();
    if (!s.ok() && !kube::IsAlreadyExists(s)) return s;
  }
  for (const auto& [name, job] : gate_jobs) {
    if (name == gate_job_name) continue;
    Status s = client_
                   .Delete(kJobs, request.ns, name,
                           {.propagation_policy = "Background",
                            .precondition_uid = Str(job["metadata"], "uid")})
                   .status();
    if (!s.ok() && !kube::IsNotFound(s)) return s;
  }
  if (credentials_problem || !no_site.empty() || held_back) {
    wake = std::min(wake.value_or(options_.resync), options_.resync);
  }
  return runtime::Result{.requeue_after = wake.value_or(milliseconds(0))};
}

}  // namespace kiln::modeldeployment
