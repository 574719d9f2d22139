#include "operator/controllers/modeldeployment/pod_trouble.h"

#include "operator/controllers/modeldeployment/version_workload.h"

namespace kiln::modeldeployment {
namespace {

using nlohmann::json;

constexpr size_t kMaxMessage = 300;

std::string Cut(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.size() > kMaxMessage) s = s.substr(0, kMaxMessage) + "...";
  return s;
}

}  // namespace

std::string PodTrouble(const json& pod) {
  const std::string name = pod.value("metadata", json::object()).value("name", "");
  const json status = pod.value("status", json::object());
  for (const auto& c : status.value("containerStatuses", json::array())) {
    if (c.value("name", "") != kServeContainer || c.value("ready", false)) continue;
    const json state = c.value("state", json::object());
    const json last = c.value("lastState", json::object()).value("terminated", json());
    std::string why;
    if (state.contains("waiting")) {
      why = state["waiting"].value("reason", "");
      const std::string message = state["waiting"].value("message", "");
      // ContainerCreating and PodInitializing are normal starts.
      if (why == "ContainerCreating" || why == "PodInitializing") why.clear();
      if (!why.empty() && !message.empty() && !last.is_object()) why += ": " + Cut(message);
    } else if (state.contains("terminated")) {
      const json& t = state["terminated"];
      why = "exited " + std::to_string(t.value("exitCode", 0));
      if (!t.value("message", "").empty()) why += ": " + Cut(t.value("message", ""));
    }
    if (last.is_object() && !state.contains("terminated")) {
      why += std::string(why.empty() ? "" : ", ") + "last exit " +
             std::to_string(last.value("exitCode", 0));
      if (!last.value("message", "").empty()) why += ": " + Cut(last.value("message", ""));
    }
    if (!why.empty()) return name + ": " + why;
  }
  for (const auto& c : status.value("conditions", json::array())) {
    if (c.value("type", "") == "PodScheduled" && c.value("status", "") == "False") {
      return name + ": not scheduled: " + Cut(c.value("message", c.value("reason", "")));
    }
  }
  return "";
}

bool PodStarting(const json& pod) {
  const json status = pod.value("status", json::object());
  bool seen = false;
  for (const auto& c : status.value("containerStatuses", json::array())) {
    if (c.value("name", "") != kServeContainer) continue;
    seen = true;
    const json state = c.value("state", json::object());
    if (!state.contains("waiting")) return false;
    const std::string why = state["waiting"].value("reason", "");
    return why == "ContainerCreating" || why == "PodInitializing";
  }
  // No status for the container yet: starting if scheduled and Pending.
  return !seen && status.value("phase", "") == "Pending";
}

std::string PodEventTrouble(const json& pod, const std::vector<json>& events) {
  if (!PodStarting(pod)) return "";
  const json meta = pod.value("metadata", json::object());
  const std::string name = meta.value("name", "");
  const std::string uid = meta.value("uid", "");
  const json* newest = nullptr;
  std::string newest_time;
  for (const json& e : events) {
    if (e.value("type", "") != "Warning") continue;
    const json about = e.value("involvedObject", json::object());
    if (about.value("kind", "Pod") != "Pod") continue;
    const std::string about_uid = about.value("uid", "");
    if (!uid.empty() && !about_uid.empty() ? about_uid != uid : about.value("name", "") != name) {
      continue;
    }
    // lastTimestamp (RFC 3339, seconds) or eventTime (microseconds); both
    // sort as text within one form. The later wins; ties keep the later in
    // the list.
    std::string when = e.value("lastTimestamp", "");
    if (when.empty()) when = e.value("eventTime", "");
    if (newest == nullptr || when >= newest_time) {
      newest = &e;
      newest_time = when;
    }
  }
  if (newest == nullptr) return "";
  return name + ": " + newest->value("reason", "Warning") + ": " +
         Cut(newest->value("message", ""));
}

}  // namespace kiln::modeldeployment
