// The Gateway API provider (spec.traffic.provider: GatewayAPI): instead of
// kiln-router reading status.traffic, the controller writes the weights into
// the backendRefs of the user's HTTPRoute (spec.traffic.gatewayAPI.httpRoute,
// in the ModelDeployment's namespace). Only the deployment's rules are
// written: those whose backendRefs name one of its versions' Services, or
// that have none and do not redirect. Every other rule, and the route's
// parents and hostnames, and each rule's matches and filters, are the user's
// and left alone. Pure, thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_GATEWAY_ROUTE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_GATEWAY_ROUTE_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "kube/resource.h"
#include "operator/api/v1alpha1/modeldeployment.h"

namespace kiln::modeldeployment {

inline const kube::Resource kHTTPRoutes{"gateway.networking.k8s.io", "v1", "httproutes",
                                        "HTTPRoute", true};

// Sets the backendRefs of each of deployment `deployment`'s rules in `route`
// (an HTTPRoute) to the Services of `traffic`'s versions on `port`, each with
// its weight, in `traffic`'s order; a backendRef kept keeps its own filters.
// A rule is the deployment's when a backendRef names a Service in the route's
// namespace that is one of `traffic`'s versions' or in `other_services` (the
// deployment's Services that lost their weight), or when it has no
// backendRefs and no RequestRedirect filter (a Gateway API route may not
// give a redirect backends). A route without rules gets one. True when the
// route changed; FailedPrecondition, naming the Services looked for, when
// no rule is the deployment's.
StatusOr<bool> SetBackendWeights(nlohmann::json& route,
                                 const std::vector<api::v1alpha1::TrafficWeight>& traffic,
                                 const std::string& deployment, int32_t port,
                                 const std::set<std::string>& other_services = {});

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_GATEWAY_ROUTE_H_
