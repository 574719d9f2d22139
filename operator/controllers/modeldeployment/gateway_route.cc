#include "operator/controllers/modeldeployment/gateway_route.h"

#include "operator/controllers/modeldeployment/version_workload.h"

namespace kiln::modeldeployment {

using nlohmann::json;

namespace {

// Whether `ref` (a backendRef) is a Service in namespace `ns` named in `names`.
bool NamesOneOf(const json& ref, const std::string& ns, const std::set<std::string>& names) {
  if (!ref.is_object()) return false;
  return ref.value("group", "") == "" && ref.value("kind", "Service") == "Service" &&
         ref.value("namespace", ns) == ns && names.count(ref.value("name", "")) > 0;
}

bool Redirects(const json& rule) {
  for (const json& f : rule.value("filters", json::array())) {
    if (f.is_object() &&
        (f.value("type", "") == "RequestRedirect" || f.contains("requestRedirect")))
      return true;
  }
  return false;
}

}  // namespace

StatusOr<bool> SetBackendWeights(json& route,
                                 const std::vector<api::v1alpha1::TrafficWeight>& traffic,
                                 const std::string& deployment, int32_t port,
                                 const std::set<std::string>& other_services) {
  std::set<std::string> ours = other_services;
  for (const auto& t : traffic) ours.insert(VersionObjectName(deployment, t.version));
  const json meta = route.value("metadata", json::object());
  const std::string ns = meta.value("namespace", ""), route_name = meta.value("name", "");

  if (!route.contains("spec") || !route["spec"].is_object()) route["spec"] = json::object();
  json& rules = route["spec"]["rules"];
  if (!rules.is_array() || rules.empty()) rules = json::array({json::object()});
  bool any = false, changed = false;
  for (json& rule : rules) {
    if (!rule.is_object()) continue;
    const json had = rule.value("backendRefs", json::array());
    bool mine = false;
    if (had.is_array() && !had.empty()) {
      for (const json& ref : had) mine = mine || NamesOneOf(ref, ns, ours);
    } else {
      mine = !Redirects(rule);
    }
    if (!mine) continue;
    any = true;
    json refs = json::array();
    for (const auto& t : traffic) {
      const std::string name = VersionObjectName(deployment, t.version);
      json ref = json::object();
      for (const json& old : had) {
        if (NamesOneOf(old, ns, {name})) ref = old;
      }
      ref["group"] = "";
      ref["kind"] = "Service";
      ref["name"] = name;
      ref["port"] = port;
      ref["weight"] = t.weight;
      refs.push_back(std::move(ref));
    }
    if (had == refs) continue;
    rule["backendRefs"] = std::move(refs);
    changed = true;
  }
  if (!any) {
    std::string names;
    for (const auto& n : ours) names += (names.empty() ? "" : ", ") + n;
    return Status::FailedPrecondition(
        "HTTPRoute " + route_name +
        " has no rule for this deployment: none of its rules has a backendRef naming one of "
        "its Services (" +
        names + ") or no backendRefs at all (other than a redirect)");
  }
  return changed;
}

}  // namespace kiln::modeldeployment
