#include "operator/controllers/modeldeployment/gateway_route.h"

#include "operator/controllers/modeldeployment/version_workload.h"

namespace kiln::modeldeployment {

using nlohmann::json;

bool SetBackendWeights(json& route, const std::vector<api::v1alpha1::TrafficWeight>& traffic,
                       const std::string& deployment, int32_t port) {
  json refs = json::array();
  for (const auto& t : traffic) {
    refs.push_back({{"group", ""},
                    {"kind", "Service"},
                    {"name", VersionObjectName(deployment, t.version)},
                    {"port", port},
                    {"weight", t.weight}});
  }
  if (!route.contains("spec") || !route["spec"].is_object()) route["spec"] = json::object();
  json& rules = route["spec"]["rules"];
  if (!rules.is_array() || rules.empty()) rules = json::array({json::object()});
  bool changed = false;
  for (json& rule : rules) {
    if (rule.value("backendRefs", json()) == refs) continue;
    rule["backendRefs"] = refs;
    changed = true;
  }
  return changed;
}

}  // namespace kiln::modeldeployment
