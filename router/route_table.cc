#include "router/route_table.h"

#include <string_view>

#include "base/log.h"

namespace kiln::router {
namespace {

// FNV-1a: stable across processes and replicas, so every router replica
// sends one sticky key to the same version.
uint64_t Hash(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char ch : s) {
    h ^= static_cast<unsigned char>(ch);
    h *= 1099511628211ull;
  }
  return h;
}

// The version whose share of [0, 100) holds `point` (weights sum to 100, or
// are all 0: then none).
const TableVersion* ByWeight(const TableRoute& route, uint64_t point) {
  if (route.weight_sum <= 0) return nullptr;
  int at = static_cast<int>(point);
  for (const TableVersion& v : route.versions) {
    if (at < v.config.weight) return &v;
    at -= v.config.weight;
  }
  return nullptr;
}

// As ByWeight, among the versions with a ready endpoint only, when some
// version with weight has none (a canary's EndpointSlice lagging its
// Deployment's readiness, or a version whose pods all went): its share goes
// to the others in proportion to their weights, so no request is sent to a
// version that cannot take it while another can. When none with weight has
// an endpoint, ByWeight's pick (and its "no ready endpoint" answer).
const TableVersion* ByWeightReady(const TableRoute& route, uint64_t point) {
  int ready_sum = 0;
  for (const TableVersion& v : route.versions) {
    if (!v.endpoints.empty()) ready_sum += v.config.weight;
  }
  if (ready_sum <= 0 || ready_sum == route.weight_sum) return ByWeight(route, point);
  // `point` is in [0, 100): scaled to [0, ready_sum).
  int at = static_cast<int>(point * static_cast<uint64_t>(ready_sum) / 100);
  for (const TableVersion& v : route.versions) {
    if (v.endpoints.empty()) continue;
    if (at < v.config.weight) return &v;
    at -= v.config.weight;
  }
  return nullptr;
}

std::string HostWithoutPort(const std::string& host) {
  if (!host.empty() && host[0] == '[') {
    const size_t close = host.find(']');
    return close == std::string::npos ? host : host.substr(0, close + 1);
  }
  const size_t colon = host.find(':');
  return colon == std::string::npos ? host : host.substr(0, colon);
}

bool PathHasPrefix(const std::string& path, const std::string& prefix) {
  if (prefix.empty() || prefix == "/") return true;
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/';
}

}  // namespace

std::string CookieValue(const std::string& header, const std::string& name) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t end = header.find(';', pos);
    if (end == std::string::npos) end = header.size();
    std::string_view pair(header.data() + pos, end - pos);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    const size_t eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
      std::string_view value = pair.substr(eq + 1);
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      return std::string(value);
    }
    pos = end + 1;
  }
  return "";
}

std::shared_ptr<Endpoint> LeastLoaded(const std::vector<std::shared_ptr<Endpoint>>& endpoints,
                                      uint64_t random) {
  if (endpoints.empty()) return nullptr;
  // Start the scan at a random endpoint so that ties go to each in turn.
  const size_t n = endpoints.size();
  const size_t start = static_cast<size_t>(random % n);
  const std::shared_ptr<Endpoint>* best = &endpoints[start];
  int best_load = (*best)->Load();
  for (size_t i = 1; i < n && best_load > 0; ++i) {
    const std::shared_ptr<Endpoint>& e = endpoints[(start + i) % n];
    const int load = e->Load();
    if (load < best_load) {
      best = &e;
      best_load = load;
    }
  }
  return *best;
}

StatusOr<std::shared_ptr<const RouteTable>> RouteTable::Build(RouteConfig config,
                                                              EndpointRegistry& registry) {
  auto table = std::make_shared<RouteTable>();
  table->generation_ = config.generation;
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const Route& r = config.routes[i];
    TableRoute route;
    route.config = r;
    for (const VersionRoute& v : r.versions) {
      TableVersion version;
      version.config = v;
      for (const std::string& address : v.endpoints) {
        StatusOr<std::shared_ptr<Endpoint>> e = registry.Get(address);
        if (!e.ok() && e.status().code() == StatusCode::kNotFound) {
          // A name that does not resolve (now) must not keep every other
          // route's change out: the version goes on without it, as without
          // an endpoint that is not ready.
          static const log::Logger logger("router.table");
          logger.Warn("endpoint left out",
                      {{"route", r.name}, {"version", v.name}, {"error", e.status().message()}});
          continue;
        }
        if (!e.ok()) return e.status().WithContext("route " + r.name + " version " + v.name);
        version.endpoints.push_back(*std::move(e));
      }
      route.weight_sum += v.weight;
      route.versions.push_back(std::move(version));
    }
    for (const std::string& m : r.models) table->by_model_[m] = i;
    table->routes_.push_back(std::move(route));
  }
  table->config_ = std::move(config);
  return std::shared_ptr<const RouteTable>(std::move(table));
}

const TableRoute* RouteTable::Match(const std::string& model, const HttpRequest& request,
                                    Pick& pick) const {
  if (!model.empty()) {
    auto it = by_model_.find(model);
    if (it != by_model_.end()) return &routes_[it->second];
  }
  const std::string host = HostWithoutPort(request.Header("host"));
  for (const TableRoute& r : routes_) {
    const Route& c = r.config;
    if (c.host.empty() && c.path_prefix.empty()) continue;  // Serves its models only.
    if (!model.empty() && !c.models.empty()) continue;      // Names models, not this one.
    if (!c.host.empty() && c.host != host) continue;
    if (!PathHasPrefix(request.path, c.path_prefix)) continue;
    return &r;
  }
  if (!model.empty()) {
    pick.error = PickError::kUnknownModel;
    pick.reason = "no model deployment serves model \"" + model + "\"";
  } else {
    pick.error = PickError::kNoRoute;
    pick.reason = "the request names no \"model\" and no route matches host \"" + host +
                  "\" and path \"" + request.path + "\"";
  }
  return nullptr;
}

Pick RouteTable::Choose(const std::string& model, const HttpRequest& request,
                        uint64_t random) const {
  Pick pick;
  const TableRoute* route = Match(model, request, pick);
  if (route == nullptr) return pick;
  pick.route = route;
  const std::string& name = route->config.name;

  const std::string wanted = request.Header("x-kiln-version");
  if (!wanted.empty()) {
    for (const TableVersion& v : route->versions) {
      if (v.config.name == wanted || v.config.role == wanted) {
        pick.version = &v;
        pick.by = "header";
        break;
      }
    }
    if (pick.version == nullptr) {
      pick.error = PickError::kUnknownVersion;
      std::string have;
      for (const TableVersion& v : route->versions) {
        have += (have.empty() ? "" : ", ") + v.config.name + " (" + v.config.role + ")";
      }
      pick.reason = "x-kiln-version: \"" + wanted + "\" is no version of " + name +
                    (have.empty() ? " (it has none yet)" : " (it has " + have + ")");
      return pick;
    }
  }
  if (pick.version == nullptr) {
    std::string key;
    if (!route->config.sticky_header.empty()) key = request.Header(route->config.sticky_header);
    if (key.empty() && !route->config.sticky_cookie.empty()) {
      key = CookieValue(request.Header("cookie"), route->config.sticky_cookie);
    }
    if (!key.empty()) {
      pick.version = ByWeightReady(*route, Hash(key) % 100);
      pick.by = "sticky";
    } else {
      pick.version = ByWeightReady(*route, random % 100);
      pick.by = "weight";
    }
  }
  if (pick.version == nullptr) {
    pick.error = PickError::kNoVersion;
    pick.reason = route->versions.empty()
                      ? name + " has no serving version yet"
                      : name + " sends no traffic to any version (every weight is 0)";
    return pick;
  }
  pick.endpoint = LeastLoaded(pick.version->endpoints, random >> 8);
  if (pick.endpoint == nullptr) {
    pick.error = PickError::kNoEndpoints;
    pick.reason = name + " version " + pick.version->config.name + " (" +
                  pick.version->config.role + ") has no ready endpoint";
    return pick;
  }
  const Route& c = route->config;
  if (c.mirror_percent > 0 && pick.version->config.name != c.mirror_version &&
      static_cast<int>((random >> 16) % 100) < c.mirror_percent) {
    for (const TableVersion& v : route->versions) {
      if (v.config.name != c.mirror_version) continue;
      if (std::shared_ptr<Endpoint> e = LeastLoaded(v.endpoints, random >> 24)) {
        pick.mirror = &v;
        pick.mirror_endpoint = std::move(e);
      }
    }
  }
  return pick;
}

}  // namespace kiln::router
