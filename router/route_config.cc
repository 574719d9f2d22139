#include "router/route_config.h"

#include <cctype>
#include <map>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "base/http_server.h"

namespace kiln::router {
namespace {

using nlohmann::json;

Status Invalid(const std::string& field, const std::string& why) {
  return Status::InvalidArgument(field + ": " + why);
}

Status ValidateEndpoint(const std::string& field, const std::string& endpoint) {
  if (endpoint.empty()) return Invalid(field, "empty endpoint");
  StatusOr<std::pair<std::string, int>> parsed = ParseBindAddress(endpoint);
  if (!parsed.ok()) return Invalid(field, "\"" + endpoint + "\" is not host:port");
  if (parsed->first.empty()) return Invalid(field, "\"" + endpoint + "\" has no host");
  return Status::Ok();
}

Status ValidateRoute(const std::string& at, const Route& r) {
  if (r.name.empty()) return Invalid(at + ".name", "must be set");
  if (r.models.empty() && r.host.empty() && r.path_prefix.empty()) {
    return Invalid(at, "names no models, host or pathPrefix, so no request can match it");
  }
  for (size_t i = 0; i < r.models.size(); ++i) {
    if (r.models[i].empty()) return Invalid(at + ".models[" + std::to_string(i) + "]", "empty");
  }
  if (!r.path_prefix.empty() && r.path_prefix[0] != '/') {
    return Invalid(at + ".pathPrefix", "\"" + r.path_prefix + "\" does not start with /");
  }
  std::set<std::string> names, roles;
  int sum = 0;
  for (size_t i = 0; i < r.versions.size(); ++i) {
    const VersionRoute& v = r.versions[i];
    const std::string vat = at + ".versions[" + std::to_string(i) + "]";
    if (v.name.empty()) return Invalid(vat + ".name", "must be set");
    if (v.name == "stable" || v.name == "canary" || v.name == "previous") {
      return Invalid(vat + ".name", "\"" + v.name + "\" is a role, not a version name");
    }
    if (!names.insert(v.name).second) return Invalid(vat + ".name", "\"" + v.name + "\" repeated");
    if (v.role != "stable" && v.role != "canary" && v.role != "previous") {
      return Invalid(vat + ".role", "\"" + v.role + "\" is not stable, canary or previous");
    }
    if (!roles.insert(v.role).second) {
      return Invalid(vat + ".role", "a second " + v.role + " version");
    }
    if (v.weight < 0 || v.weight > 100) {
      return Invalid(vat + ".weight", std::to_string(v.weight) + " is not in 0-100");
    }
    sum += v.weight;
    for (size_t e = 0; e < v.endpoints.size(); ++e) {
      Status s = ValidateEndpoint(vat + ".endpoints[" + std::to_string(e) + "]", v.endpoints[e]);
      if (!s.ok()) return s;
    }
  }
  if (sum != 0 && sum != 100) {
    return Invalid(at + ".versions", "weights sum to " + std::to_string(sum) + ", not 100");
  }
  if (r.mirror_percent < 0 || r.mirror_percent > 100) {
    return Invalid(at + ".mirrorPercent", std::to_string(r.mirror_percent) + " is not in 0-100");
  }
  if (!r.mirror_version.empty() && !names.count(r.mirror_version)) {
    return Invalid(at + ".mirrorVersion", "\"" + r.mirror_version + "\" is no version's name");
  }
  if (r.mirror_percent > 0 && r.mirror_version.empty()) {
    return Invalid(at + ".mirrorVersion", "must be set when mirrorPercent is above 0");
  }
  return Status::Ok();
}

// Reads `j[key]` into `out` when present; a wrong type is an error naming the
// field.
template <typename T>
Status Read(const json& j, const char* key, const std::string& at, T& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  try {
    out = it->get<T>();
  } catch (const json::exception&) {
    return Invalid(at + "." + key, "has the wrong type (" + std::string(it->type_name()) + ")");
  }
  return Status::Ok();
}

Status CheckKeys(const json& j, const std::string& at, const std::set<std::string>& known) {
  if (!j.is_object()) return Invalid(at.empty() ? "(root)" : at, "is not an object");
  for (const auto& [k, _] : j.items()) {
    if (!known.count(k)) return Invalid(at.empty() ? k : at + "." + k, "unknown field");
  }
  return Status::Ok();
}

StatusOr<VersionRoute> VersionFromJson(const json& j, const std::string& at) {
  KILN_RETURN_IF_ERROR(CheckKeys(j, at, {"name", "role", "weight", "endpoints"}));
  VersionRoute v;
  KILN_RETURN_IF_ERROR(Read(j, "name", at, v.name));
  KILN_RETURN_IF_ERROR(Read(j, "role", at, v.role));
  KILN_RETURN_IF_ERROR(Read(j, "weight", at, v.weight));
  KILN_RETURN_IF_ERROR(Read(j, "endpoints", at, v.endpoints));
  return v;
}

StatusOr<Route> RouteFromJson(const json& j, const std::string& at) {
  KILN_RETURN_IF_ERROR(CheckKeys(j, at,
                                 {"name", "models", "host", "pathPrefix", "mirrorPercent",
                                  "mirrorVersion", "stickyHeader", "stickyCookie", "versions"}));
  Route r;
  KILN_RETURN_IF_ERROR(Read(j, "name", at, r.name));
  KILN_RETURN_IF_ERROR(Read(j, "models", at, r.models));
  KILN_RETURN_IF_ERROR(Read(j, "host", at, r.host));
  KILN_RETURN_IF_ERROR(Read(j, "pathPrefix", at, r.path_prefix));
  KILN_RETURN_IF_ERROR(Read(j, "mirrorPercent", at, r.mirror_percent));
  KILN_RETURN_IF_ERROR(Read(j, "mirrorVersion", at, r.mirror_version));
  KILN_RETURN_IF_ERROR(Read(j, "stickyHeader", at, r.sticky_header));
  KILN_RETURN_IF_ERROR(Read(j, "stickyCookie", at, r.sticky_cookie));
  auto it = j.find("versions");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_array()) return Invalid(at + ".versions", "is not a list");
    for (size_t i = 0; i < it->size(); ++i) {
      StatusOr<VersionRoute> v =
          VersionFromJson((*it)[i], at + ".versions[" + std::to_string(i) + "]");
      if (!v.ok()) return v.status();
      r.versions.push_back(*std::move(v));
    }
  }
  // Header names match lower-cased (HttpRequest::headers are).
  for (char& c : r.sticky_header)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

}  // namespace

Status Validate(const RouteConfig& config) {
  std::map<std::string, std::string> model_owner;
  std::set<std::string> names;
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const Route& r = config.routes[i];
    const std::string at = "routes[" + std::to_string(i) + "]";
    KILN_RETURN_IF_ERROR(ValidateRoute(at, r));
    if (!names.insert(r.name).second) return Invalid(at + ".name", "\"" + r.name + "\" repeated");
    for (const std::string& m : r.models) {
      auto [it, inserted] = model_owner.emplace(m, r.name);
      if (!inserted) {
        return Invalid(at + ".models", "model \"" + m + "\" is already served by " + it->second);
      }
    }
  }
  return Status::Ok();
}

StatusOr<RouteConfig> RouteConfigFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("routes: not valid JSON");
  KILN_RETURN_IF_ERROR(CheckKeys(j, "", {"generation", "routes"}));
  RouteConfig config;
  KILN_RETURN_IF_ERROR(Read(j, "generation", "", config.generation));
  auto it = j.find("routes");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_array()) return Invalid("routes", "is not a list");
    for (size_t i = 0; i < it->size(); ++i) {
      StatusOr<Route> r = RouteFromJson((*it)[i], "routes[" + std::to_string(i) + "]");
      if (!r.ok()) return r.status();
      config.routes.push_back(*std::move(r));
    }
  }
  KILN_RETURN_IF_ERROR(Validate(config));
  return config;
}

std::string RouteConfigToJson(const RouteConfig& config) {
  json routes = json::array();
  for (const Route& r : config.routes) {
    json versions = json::array();
    for (const VersionRoute& v : r.versions) {
      versions.push_back(
          {{"name", v.name}, {"role", v.role}, {"weight", v.weight}, {"endpoints", v.endpoints}});
    }
    routes.push_back({{"name", r.name},
                      {"models", r.models},
                      {"host", r.host},
                      {"pathPrefix", r.path_prefix},
                      {"mirrorPercent", r.mirror_percent},
                      {"mirrorVersion", r.mirror_version},
                      {"stickyHeader", r.sticky_header},
                      {"stickyCookie", r.sticky_cookie},
                      {"versions", versions}});
  }
  return json{{"generation", config.generation}, {"routes", routes}}.dump(2);
}

}  // namespace kiln::router
