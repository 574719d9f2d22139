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

}  // namespace kiln::modeldeployment
