#include "operator/fleet/quarantine.h"

#include <charconv>
#include <cstdint>

#include "kube/api_error.h"
#include "operator/placement/well_known.h"

namespace kiln::fleet {
namespace {

using nlohmann::json;
using std::chrono::system_clock;

json Taints(const json& node) {
  const json spec = node.value("spec", json::object());
  auto it = spec.find("taints");
  return it != spec.end() && it->is_array() ? *it : json::array();
}

bool IsQuarantine(const json& taint) {
  return taint.is_object() && taint.value("key", "") == placement::kQuarantineTaint &&
         taint.value("effect", "") == "NoSchedule";
}

// The end a quarantine taint names; nullopt for one without a numeric value.
std::optional<int64_t> EndOf(const json& taint) {
  const std::string value = taint.value("value", "");
  int64_t seconds = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
    return std::nullopt;
  }
  return seconds;
}

int64_t UnixSeconds(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

StatusOr<json> PatchTaints(kube::Client& client, const json& node, const json& taints) {
  const json patch = {
      {"metadata", {{"resourceVersion", node["metadata"].value("resourceVersion", "")}}},
      {"spec", {{"taints", taints}}}};
  return client.Patch(kube::resources::kNodes, "", node["metadata"].value("name", ""),
                      kube::PatchType::kMerge, patch.dump());
}

}  // namespace

std::optional<json> TaintsWithQuarantine(const json& node, system_clock::time_point until) {
  json taints = Taints(node);
  const std::string end = std::to_string(UnixSeconds(until));
  for (auto& t : taints) {
    if (!IsQuarantine(t)) continue;
    auto current = EndOf(t);
    if (!current || *current >= UnixSeconds(until)) return std::nullopt;  // Holds long enough.
    t["value"] = end;
    return taints;
  }
  taints.push_back(
      {{"key", placement::kQuarantineTaint}, {"value", end}, {"effect", "NoSchedule"}});
  return taints;
}

std::optional<json> TaintsWithoutEndedQuarantine(const json& node, system_clock::time_point now) {
  json kept = json::array();
  bool lifted = false;
  for (const auto& t : Taints(node)) {
    auto end = IsQuarantine(t) ? EndOf(t) : std::nullopt;
    if (end && *end <= UnixSeconds(now)) {
      lifted = true;
      continue;
    }
    kept.push_back(t);
  }
  if (!lifted) return std::nullopt;
  return kept;
}

Status QuarantineNode(kube::Client& client, const std::string& node,
                      system_clock::time_point until) {
  Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    KILN_ASSIGN_OR_RETURN(json current, client.Get(kube::resources::kNodes, "", node));
    auto taints = TaintsWithQuarantine(current, until);
    if (!taints) return Status::Ok();
    last = PatchTaints(client, current, *taints).status();
    if (!kube::IsConflict(last)) return last;
  }
  return last;
}

StatusOr<bool> LiftEndedQuarantine(kube::Client& client, const json& node,
                                   system_clock::time_point now) {
  auto taints = TaintsWithoutEndedQuarantine(node, now);
  if (!taints) return false;
  KILN_RETURN_IF_ERROR(PatchTaints(client, node, *taints).status());
  return true;
}

}  // namespace kiln::fleet
