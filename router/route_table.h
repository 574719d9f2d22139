// RouteTable: a RouteConfig made ready to route by: models indexed, each
// version's endpoints bound to shared Endpoints (router/endpoint.h). Immutable
// once built, so requests read it without locks while a new one is built;
// the proxy swaps tables whole.
//
// Choose picks, for one request, the route, the version and the endpoint:
//  - route: by the body's "model" (an exact match of a route's models), else
//    by Host and path prefix (see route_config.h);
//  - version: the x-kiln-version header ("stable", "canary", "previous" or a
//    version's name) wins; else the route's sticky header or cookie, hashed
//    to a point in [0, 100) that falls in one version's share of the weights
//    (a key stays on its version while the weights stand, and only the keys
//    in the share that moved change version when they change); else a random
//    point in [0, 100) does the same;
//  - endpoint: the least loaded of the version's ready endpoints (fewest
//    outstanding requests, or the queue depth the backend reports), ties
//    broken at random, as the Gateway API inference extension's endpoint
//    picker does rather than round-robin;
//  - mirror: with the route's mirror_percent chance, a copy goes to the
//    least loaded endpoint of mirror_version (not when the request is
//    already going there).
#ifndef KILN_ROUTER_ROUTE_TABLE_H_
#define KILN_ROUTER_ROUTE_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/http_server.h"
#include "base/statusor.h"
#include "router/endpoint.h"
#include "router/route_config.h"

namespace kiln::router {

struct TableVersion {
  VersionRoute config;
  std::vector<std::shared_ptr<Endpoint>> endpoints;
};

struct TableRoute {
  Route config;
  std::vector<TableVersion> versions;  // In config order.
  int weight_sum = 0;
};

// Why Choose found nowhere to send a request.
enum class PickError {
  kNone,
  kUnknownModel,    // 404: no route serves the model.
  kNoRoute,         // 404: no model, and no route matches host and path.
  kUnknownVersion,  // 400: x-kiln-version names no version of the route.
  kNoVersion,       // 503: the route has no versions yet or all weights are 0.
  kNoEndpoints,     // 503: the chosen version has no ready endpoint.
};

struct Pick {
  PickError error = PickError::kNone;
  std::string reason;  // For an error: a sentence naming the route/version.
  const TableRoute* route = nullptr;
  const TableVersion* version = nullptr;
  std::shared_ptr<Endpoint> endpoint;
  // How the version was chosen: "header", "sticky" or "weight".
  const char* by = "";
  const TableVersion* mirror = nullptr;  // Set when the request is also mirrored.
  std::shared_ptr<Endpoint> mirror_endpoint;
};

class RouteTable {
 public:
  // Binds every endpoint through `registry`. The config must be Validated;
  // an endpoint that does not resolve is an error naming it.
  static StatusOr<std::shared_ptr<const RouteTable>> Build(RouteConfig config,
                                                           EndpointRegistry& registry);

  // `model` is the body's "model" field ("" when it has none). `random` is a
  // uniform 64-bit value per request (for the weights, ties and the mirror).
  Pick Choose(const std::string& model, const HttpRequest& request, uint64_t random) const;

  uint64_t generation() const { return generation_; }
  const std::vector<TableRoute>& routes() const { return routes_; }
  const RouteConfig& config() const { return config_; }

 private:
  const TableRoute* Match(const std::string& model, const HttpRequest& request, Pick& pick) const;

  RouteConfig config_;
  uint64_t generation_ = 0;
  std::vector<TableRoute> routes_;
  std::map<std::string, size_t> by_model_;  // Model → index in routes_.
};

// The least loaded of `endpoints` (ties broken by `random`), or null.
std::shared_ptr<Endpoint> LeastLoaded(const std::vector<std::shared_ptr<Endpoint>>& endpoints,
                                      uint64_t random);

// The value of cookie `name` in a Cookie header ("a=1; b=2"), or "".
std::string CookieValue(const std::string& cookie_header, const std::string& name);

}  // namespace kiln::router

#endif  // KILN_ROUTER_ROUTE_TABLE_H_
