// The Gateway API provider (spec.traffic.provider: GatewayAPI): instead of
// kiln-router reading status.traffic, the controller writes the weights into
// the backendRefs of the user's HTTPRoute (spec.traffic.gatewayAPI.httpRoute,
// in the ModelDeployment's namespace): every rule's backendRefs become the
// versions' Services with their weights. The route's other fields (parents,
// hostnames, matches, filters) are the user's and left alone. Pure,
// thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_GATEWAY_ROUTE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_GATEWAY_ROUTE_H_

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/resource.h"
#include "operator/api/v1alpha1/modeldeployment.h"

namespace kiln::modeldeployment {

inline const kube::Resource kHTTPRoutes{"gateway.networking.k8s.io", "v1", "httproutes",
                                        "HTTPRoute", true};

// Sets every rule's backendRefs of `route` (an HTTPRoute) to the Services of
// `traffic`'s versions of deployment `deployment` on `port`, each with its
// weight (a route without rules gets one). False when `route` already said
// exactly that.
bool SetBackendWeights(nlohmann::json& route,
                       const std::vector<api::v1alpha1::TrafficWeight>& traffic,
                       const std::string& deployment, int32_t port);

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_GATEWAY_ROUTE_H_
