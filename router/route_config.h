// RouteConfig: everything kiln-router routes by, as one value. The router
// swaps a whole RouteConfig in at once, never half-applied; it comes from a
// file (kiln-router --routes FILE) or from the API (ModelDeployments' status
// and the EndpointSlices of their versions' Services, router/api_source.h).
//
// A request belongs to the first route whose `models` holds the request
// body's "model" field; a request without a "model" (or with one no route
// names) goes to the first route whose host and path prefix match it, where
// both are set or the route names no models. Inside a route a version is
// chosen by, in order: the x-kiln-version header ("stable", "canary",
// "previous" or a version's name), the sticky key (the same key stays on one
// version while the weights stand), then the weights.
#ifndef KILN_ROUTER_ROUTE_CONFIG_H_
#define KILN_ROUTER_ROUTE_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/statusor.h"

namespace kiln::router {

struct VersionRoute {
  std::string name;  // The model version ("v2"); what x-kiln-version may name.
  std::string role;  // "stable", "canary" or "previous".
  int weight = 0;    // Percent of the route's traffic, 0-100.
  // Ready serving endpoints of the version, "host:port" (IPv6 bracketed).
  std::vector<std::string> endpoints;
};

struct Route {
  std::string name;                 // "<namespace>/<ModelDeployment>"; labels the metrics.
  std::vector<std::string> models;  // Values of the request body's "model" field.
  std::string host;                 // The Host header without port ("": any).
  std::string path_prefix;          // ("": any).
  std::vector<VersionRoute> versions;
  int mirror_percent = 0;      // Of requests also sent to mirror_version; answers discarded.
  std::string mirror_version;  // A version's name.
  std::string sticky_header;   // A request header whose value keeps a client on one version.
  std::string sticky_cookie;   // A cookie that does the same.
};

struct RouteConfig {
  std::vector<Route> routes;
  // Grows with every new config (a file reload, an API change); shown in
  // /debug/routes and metrics so a test can tell which table served.
  uint64_t generation = 0;
};

// InvalidArgument naming the field (e.g. "routes[1].versions[0].weight: 120
// is not in 0-100") for: a route without a name, or without models, host and
// path prefix; versions with empty or repeated names, a role other than the
// three, two versions of one role, weights outside 0-100 or not summing to
// 100 (a route whose weights are all 0 is allowed: it answers 503); a
// mirror_version no version has, mirror_percent outside 0-100; a malformed
// endpoint; a model named by two routes.
Status Validate(const RouteConfig& config);

// The JSON form (the file kiln-router --routes reads; /debug/routes shows):
// {"generation": 3, "routes": [{"name": "default/chat", "models": ["chat"],
//   "host": "", "pathPrefix": "", "mirrorPercent": 0, "mirrorVersion": "",
//   "stickyHeader": "x-session-id", "stickyCookie": "",
//   "versions": [{"name": "v1", "role": "stable", "weight": 90,
//                 "endpoints": ["10.0.0.5:8000"]}, ...]}]}
// Unknown fields are errors; the result is Validated.
StatusOr<RouteConfig> RouteConfigFromJson(const std::string& json);
std::string RouteConfigToJson(const RouteConfig& config);

}  // namespace kiln::router

#endif  // KILN_ROUTER_ROUTE_CONFIG_H_
