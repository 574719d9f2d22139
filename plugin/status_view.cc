#include "plugin/status_view.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "base/time_format.h"
#include "operator/api/codec.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/api/v1alpha1/trainingjob.h"

namespace kiln::plugin {
namespace {

namespace v1 = api::v1alpha1;
using nlohmann::json;

// Rows of cells printed in aligned columns, two spaces apart, each line
// indented; the last column is not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.size() == 1; }

  std::string Render(size_t indent) const {
    std::vector<size_t> width;
    for (const auto& r : rows_) {
      if (width.size() < r.size()) width.resize(r.size(), 0);
      for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    std::string out;
    for (const auto& r : rows_) {
      std::string line(indent, ' ');
      for (size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "Label:" padded to a fixed column, then the value.
void Field(std::string& out, const std::string& label, const std::string& value) {
  constexpr size_t kColumn = 18;
  std::string l = label.empty() ? "" : label + ":";
  l += std::string(l.size() < kColumn ? kColumn - l.size() : 1, ' ');
  out += l + value + "\n";
}

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// Four significant digits: losses (2.614), measurements (0.0123).
std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

// 16477.3 → "16,477".
std::string Thousands(double v) {
  const long long n = std::llround(v);
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

// "3m ago (2026-12-05T10:00:00Z)", or the text alone when it does not parse.
std::string When(const std::string& rfc3339, TimePoint now) {
  const std::string age = Age(rfc3339, now);
  return age.empty() ? rfc3339 : age + " ago (" + rfc3339 + ")";
}

std::string Join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : sep) + i;
  return out;
}

std::string Or(const std::string& s) { return s.empty() ? "-" : s; }

void Conditions(std::string& out, const std::optional<std::vector<v1::Condition>>& conditions,
                TimePoint now) {
  if (!conditions || conditions->empty()) return;
  out += "Conditions:\n";
  Table t({"TYPE", "STATUS", "REASON", "AGE", "MESSAGE"});
  for (const auto& c : *conditions) {
    t.Add({c.type, c.status, Or(c.reason), Or(Age(c.last_transition_time, now)), c.message});
  }
  out += t.Render(2);
}

void Header(std::string& out, const json& metadata) {
  Field(out, "Name", Str(metadata, "name"));
  Field(out, "Namespace", Str(metadata, "namespace"));
  if (metadata.contains("deletionTimestamp")) {
    Field(out, "Deleting", "since " + Str(metadata, "deletionTimestamp"));
  }
}

std::string DecodeFailure(const char* kind, const json& object, const Status& why) {
  std::string out;
  Header(out, object.value("metadata", json::object()));
  Field(out, "Phase", Or(object.value("status", json::object()).value("phase", "")));
  out += "(the " + std::string(kind) +
         " does not match this kubectl-kiln's API types: " + why.message() +
         "; -o yaml shows it whole)\n";
  return out;
}

std::string Step(const v1::CanaryStep& s) {
  if (s.set_weight) return "setWeight " + std::to_string(*s.set_weight) + "%";
  if (s.pause) return s.pause->duration ? "pause " + *s.pause->duration : "pause (until Promote)";
  if (s.analysis) {
    return s.analysis->background.value_or(false)
               ? "analysis (background, until promotion)"
               : "analysis " + s.analysis->duration.value_or("1m");
  }
  if (s.quality_gate) {
    std::string text = "qualityGate";
    if (s.quality_gate->samples) text += " samples " + std::to_string(*s.quality_gate->samples);
    if (s.quality_gate->max_regression) {
      text += " maxRegression " + json(*s.quality_gate->max_regression).dump();
    }
    if (s.quality_gate->evaluation_set) text += " " + *s.quality_gate->evaluation_set;
    return text;
  }
  return "?";
}

int32_t WeightOf(const v1::ModelDeploymentStatus& st, const std::string& version) {
  for (const auto& w : st.traffic.value_or(std::vector<v1::TrafficWeight>{})) {
    if (w.version == version) return w.weight;
  }
  return 0;
}

}  // namespace

std::string Age(const std::string& rfc3339, TimePoint now) {
  auto t = ParseRfc3339(rfc3339);
  if (!t.ok()) return "";
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(now - *t).count();
  if (secs < 0) secs = 0;
  const auto d = secs / 86400, h = secs % 86400 / 3600, m = secs % 3600 / 60, s = secs % 60;
  if (d > 0) return std::to_string(d) + "d" + (h > 0 ? std::to_string(h) + "h" : "");
  if (h > 0) return std::to_string(h) + "h" + (m > 0 ? std::to_string(m) + "m" : "");
  if (m > 0) return std::to_string(m) + "m" + (m < 10 && s > 0 ? std::to_string(s) + "s" : "");
  return std::to_string(s) + "s";
}

std::string FormatTrainingJob(const json& object, TimePoint now) {
  auto decoded = api::Decode<v1::TrainingJob>(object);
  if (!decoded.ok()) return DecodeFailure("trainingjob", object, decoded.status());
  const v1::TrainingJob& job = *decoded;
  const v1::TrainingJobStatus st = job.status.value_or(v1::TrainingJobStatus{});
  std::string out;
  Header(out, job.metadata);
  std::string phase = st.phase.value_or("Pending");
  if (st.restarts.value_or(0) > 0) phase += " (attempt " + std::to_string(*st.restarts) + ")";
  if (job.spec.suspend.value_or(false) && phase.rfind("Suspended", 0) != 0) {
    phase += ", suspend requested";
  }
  Field(out, "Phase", phase);
  const int64_t total = job.spec.training.steps;
  if (st.step) {
    std::string progress = "step " + std::to_string(*st.step) + " / " + std::to_string(total);
    if (total > 0) {
      char pct[16];
      std::snprintf(pct, sizeof(pct), " (%.1f%%)",
                    100.0 * static_cast<double>(*st.step) / static_cast<double>(total));
      progress += pct;
    }
    Field(out, "Progress", progress);
  } else {
    Field(out, "Progress", "not started (" + std::to_string(total) + " steps)");
  }
  if (st.loss) {
    Field(out, "Loss",
          Number(*st.loss) +
              (st.validation_loss ? " (validation " + Number(*st.validation_loss) + ")" : ""));
  }
  if (st.tokens_per_second) Field(out, "Tokens/s", Thousands(*st.tokens_per_second));
  Field(out, "Workers",
        std::to_string(st.ready_workers.value_or(0)) + " ready of " +
            std::to_string(job.spec.workers.replicas));
  if (st.last_checkpoint) {
    const auto& c = *st.last_checkpoint;
    std::string line = "step " + std::to_string(c.step);
    if (c.loss) line += " (loss " + Number(*c.loss) + ")";
    if (c.time) line += ", " + When(*c.time, now);
    Field(out, "Last checkpoint", line);
    Field(out, "", c.uri);
  } else {
    Field(out, "Last checkpoint", "none yet");
  }
  if (st.start_time) Field(out, "Started", When(*st.start_time, now));
  if (st.completion_time) Field(out, "Completed", When(*st.completion_time, now));
  const int32_t max_restarts =
      job.spec.failure_policy ? job.spec.failure_policy->max_restarts.value_or(10) : 10;
  Field(
      out, "Restarts",
      std::to_string(st.restarts.value_or(0)) + " (at most " + std::to_string(max_restarts) + ")");
  if (st.restart_history && !st.restart_history->empty()) {
    Table t(
        {"#", "AGE", "REASON", "CLUSTER", "NODE", "EXIT", "AT STEP", "RESUMED FROM", "MESSAGE"});
    const size_t first = static_cast<size_t>(st.restarts.value_or(0)) >= st.restart_history->size()
                             ? static_cast<size_t>(*st.restarts) - st.restart_history->size()
                             : 0;
    for (size_t i = 0; i < st.restart_history->size(); ++i) {
      const auto& r = (*st.restart_history)[i];
      t.Add({std::to_string(first + i + 1), Or(Age(r.time, now)), r.reason,
             Or(r.cluster.value_or("")), Or(r.node.value_or("")),
             r.exit_code ? std::to_string(*r.exit_code) : "-",
             r.failed_at_step ? std::to_string(*r.failed_at_step) : "-",
             r.resumed_from_step ? std::to_string(*r.resumed_from_step) : "-",
             r.message.value_or("")});
    }
    out += t.Render(2);
  }
  if (st.placement && !st.placement->empty()) {
    out += "Placement:\n";
    Table t({"CLUSTER", "WORKERS", "NODES (rank order)"});
    for (const auto& p : *st.placement) {
      const auto nodes = p.nodes.value_or(std::vector<std::string>{});
      t.Add({p.cluster, std::to_string(p.workers.value_or(static_cast<int32_t>(nodes.size()))),
             Join(nodes, ", ")});
    }
    out += t.Render(2);
  } else {
    Field(out, "Placement", "none");
  }
  if (st.quarantined_nodes && !st.quarantined_nodes->empty()) {
    Field(out, "Quarantined nodes", Join(*st.quarantined_nodes, ", "));
  }
  Conditions(out, st.conditions, now);
  return out;
}

std::string FormatModelDeployment(const json& object, TimePoint now) {
  auto decoded = api::Decode<v1::ModelDeployment>(object);
  if (!decoded.ok()) return DecodeFailure("modeldeployment", object, decoded.status());
  const v1::ModelDeployment& md = *decoded;
  const v1::ModelDeploymentStatus st = md.status.value_or(v1::ModelDeploymentStatus{});
  std::string out;
  Header(out, md.metadata);
  Field(out, "Phase", st.phase.value_or("Pending"));
  if (st.message && !st.message->empty()) Field(out, "Message", *st.message);
  Field(out, "Model",
        md.spec.model.name + " " + md.spec.model.version + " (" + md.spec.model.uri + ")");
  Field(out, "Replicas",
        std::to_string(st.ready_replicas.value_or(0)) + " ready of " +
            std::to_string(st.replicas.value_or(0)) + " (stable wants " +
            std::to_string(md.spec.replicas.value_or(1)) + ")");

  out += "Versions:\n";
  Table versions({"ROLE", "VERSION", "WEIGHT", "CHECKPOINT", "NOTE"});
  if (st.stable_version) {
    versions.Add({"stable", *st.stable_version,
                  std::to_string(WeightOf(st, *st.stable_version)) + "%",
                  Or(st.stable_uri.value_or("")), ""});
  }
  if (st.canary_version) {
    const std::string uri =
        *st.canary_version == md.spec.model.version ? md.spec.model.uri : std::string("-");
    versions.Add({"canary", *st.canary_version,
                  std::to_string(WeightOf(st, *st.canary_version)) + "%", uri, ""});
  }
  if (st.previous_version) {
    versions.Add({"previous", *st.previous_version,
                  std::to_string(WeightOf(st, *st.previous_version)) + "%",
                  Or(st.previous_uri.value_or("")),
                  st.previous_scale_down_at
                      ? "warm until " + *st.previous_scale_down_at + " (rollback target)"
                      : "warm (rollback target)"});
  }
  if (st.stopped_version) {
    versions.Add({"stopped", *st.stopped_version, "0%", "-",
                  "not rolled out again until spec.model or spec.rollout.action changes"});
  }
  if (versions.empty()) {
    out += "  none yet\n";
  } else {
    out += versions.Render(2);
  }

  const std::vector<v1::CanaryStep> steps =
      md.spec.strategy && md.spec.strategy->canary
          ? md.spec.strategy->canary->steps.value_or(std::vector<v1::CanaryStep>{})
          : std::vector<v1::CanaryStep>{};
  if (!steps.empty()) {
    const bool rolling = st.canary_version.has_value();
    const int32_t current = st.current_step.value_or(0);
    std::string title = "Steps:";
    if (rolling) {
      title += current >= static_cast<int32_t>(steps.size())
                   ? " all " + std::to_string(steps.size()) + " done, promoting"
                   : " " + std::to_string(current + 1) + " of " + std::to_string(steps.size());
      if (st.canary_weight) title += ", canary weight " + std::to_string(*st.canary_weight) + "%";
    } else {
      title += " (no rollout in progress)";
    }
    out += title + "\n";
    for (size_t i = 0; i < steps.size(); ++i) {
      const auto idx = static_cast<int32_t>(i);
      std::string mark = "    ";
      std::string note;
      if (rolling && idx < current) {
        mark = "done";
      } else if (rolling && idx == current) {
        mark = "  ->";
        if (st.step_started_at) note = "  (started " + Or(Age(*st.step_started_at, now)) + " ago)";
      }
      out += "  " + mark + "  " + std::to_string(i) + "  " + Step(steps[i]) + note + "\n";
    }
  }

  const std::string action =
      md.spec.rollout ? md.spec.rollout->action.value_or("Continue") : "Continue";
  std::string action_line = action;
  if (st.handled_action && *st.handled_action == action) {
    action_line += " (acted on";
    if (st.handled_action_generation) {
      action_line += " at generation " + std::to_string(*st.handled_action_generation);
    }
    action_line += ")";
  } else if (action != st.handled_action.value_or("Continue")) {
    action_line += " (not acted on yet; last acted on: " + st.handled_action.value_or("none") + ")";
  }
  Field(out, "Rollout action", action_line);
  Field(out, "Rollbacks", std::to_string(st.rollbacks.value_or(0)));

  if (st.analysis_runs && !st.analysis_runs->empty()) {
    out += "Analysis runs:\n";
    for (const auto& run : *st.analysis_runs) {
      std::string line = "  " + run.name + "  " + run.phase;
      if (run.step) line += "  step " + std::to_string(*run.step);
      if (run.started_at) line += "  started " + Or(Age(*run.started_at, now)) + " ago";
      if (run.finished_at) line += ", finished " + Or(Age(*run.finished_at, now)) + " ago";
      out += line + "\n";
      if (run.message && !run.message->empty()) out += "    " + *run.message + "\n";
      if (run.measurements && !run.measurements->empty()) {
        Table t({"METRIC", "VALUE", "PHASE", "AGE"});
        for (const auto& m : *run.measurements) {
          t.Add({m.metric, m.value ? Number(*m.value) : "-", m.phase,
                 m.time ? Or(Age(*m.time, now)) : "-"});
        }
        out += t.Render(4);
      }
    }
  }
  Conditions(out, st.conditions, now);
  return out;
}

std::string FormatObject(Kind kind, const json& object, TimePoint now) {
  return kind == Kind::kTrainingJob ? FormatTrainingJob(object, now)
                                    : FormatModelDeployment(object, now);
}

std::string FormatList(Kind kind, const std::vector<json>& objects, bool with_namespace,
                       const std::string& ns, TimePoint now) {
  if (objects.empty()) {
    return std::string("No ") + KindName(kind) + "s found" +
           (with_namespace ? "." : " in namespace \"" + ns + "\".") + "\n";
  }
  std::vector<std::string> header;
  if (with_namespace) header.push_back("NAMESPACE");
  if (kind == Kind::kTrainingJob) {
    for (const char* h :
         {"NAME", "PHASE", "STEP", "LOSS", "TOKENS/S", "WORKERS", "RESTARTS", "AGE"}) {
      header.push_back(h);
    }
  } else {
    for (const char* h :
         {"NAME", "PHASE", "STABLE", "CANARY", "WEIGHTS", "STEP", "ROLLBACKS", "AGE"}) {
      header.push_back(h);
    }
  }
  Table t(header);
  for (const auto& o : objects) {
    const json meta = o.value("metadata", json::object());
    const json spec = o.value("spec", json::object());
    const json st = o.value("status", json::object());
    std::vector<std::string> row;
    if (with_namespace) row.push_back(Str(meta, "namespace"));
    row.push_back(Str(meta, "name"));
    row.push_back(Or(Str(st, "phase")));
    if (kind == Kind::kTrainingJob) {
      const json training = spec.value("training", json::object());
      row.push_back((st.contains("step") ? st["step"].dump() : "-") + "/" +
                    (training.contains("steps") ? training["steps"].dump() : "?"));
      row.push_back(st.contains("loss") && st["loss"].is_number() ? Number(st["loss"].get<double>())
                                                                  : "-");
      row.push_back(st.contains("tokensPerSecond") && st["tokensPerSecond"].is_number()
                        ? Thousands(st["tokensPerSecond"].get<double>())
                        : "-");
      row.push_back(std::to_string(st.value("readyWorkers", 0)) + "/" +
                    std::to_string(spec.value("workers", json::object()).value("replicas", 0)));
      row.push_back(std::to_string(st.value("restarts", 0)));
    } else {
      row.push_back(Or(Str(st, "stableVersion")));
      row.push_back(Or(Str(st, "canaryVersion")));
      std::vector<std::string> weights;
      for (const auto& w : st.value("traffic", json::array())) {
        if (w.is_object())
          weights.push_back(Str(w, "version") + "=" + w.value("weight", json(0)).dump());
      }
      row.push_back(Or(Join(weights, ",")));
      row.push_back(st.contains("canaryVersion") && st.contains("currentStep")
                        ? st["currentStep"].dump()
                        : "-");
      row.push_back(std::to_string(st.value("rollbacks", 0)));
    }
    row.push_back(Or(Age(Str(meta, "creationTimestamp"), now)));
    t.Add(row);
  }
  return t.Render(0);
}

bool IsTerminal(Kind kind, const json& object) {
  const json st = object.value("status", json::object());
  const std::string phase = Str(st, "phase");
  // A spec the controller has not seen yet (a new model written just
  // before `watch`) is about to change the phase.
  const json generation = object.value("metadata", json::object()).value("generation", json());
  const json observed = st.value("observedGeneration", json());
  if (generation.is_number_integer() && observed.is_number_integer() &&
      observed.get<int64_t>() < generation.get<int64_t>()) {
    return false;
  }
  if (kind == Kind::kTrainingJob) return phase == "Succeeded" || phase == "Failed";
  if (phase == "Healthy") return !st.contains("canaryVersion");
  return phase == "Degraded" || phase == "Aborted" || phase == "RolledBack";
}

bool IsSuccess(Kind kind, const json& object) {
  const std::string phase = Str(object.value("status", json::object()), "phase");
  return kind == Kind::kTrainingJob ? phase == "Succeeded" : phase == "Healthy";
}

}  // namespace kiln::plugin
