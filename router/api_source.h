// ApiSource: kiln-router's route table from the Kubernetes API. Watches
// ModelDeployments and the EndpointSlices of their versions' Services (those
// labelled kiln.dev/model-deployment), and after every change builds a whole
// new RouteConfig (BuildRouteConfig) and hands it to the apply function, so
// the router swaps in one consistent table per change. The weights come from
// each ModelDeployment's status.traffic: the controller's decision, written
// there before anything acts on it, is the only thing the router obeys; a
// rollback is one status write, followed here on the watch event.
//
// The two kinds may come from two clusters: in kiln's hub model the
// ModelDeployments live in the hub while each member cluster runs its own
// router in front of its own pods, so a member's router watches the hub's
// ModelDeployments and its own cluster's EndpointSlices.
//
// Thread-safe. The apply function runs on an informer's thread, one call at a
// time, with configs in increasing generation.
#ifndef KILN_ROUTER_API_SOURCE_H_
#define KILN_ROUTER_API_SOURCE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kube/client.h"
#include "kube/informer.h"
#include "kube/store.h"
#include "router/route_config.h"

namespace kiln::router {

// What BuildRouteConfig made: the config, and why a ModelDeployment (or part
// of one) was left out ("default/chat: status.traffic names v9, which is
// neither the stable, canary nor previous version").
struct BuiltRoutes {
  RouteConfig config;
  std::vector<std::string> problems;
};

// One route per ModelDeployment whose traffic.provider is Router, in
// namespace/name order: models [spec.model.name]; host, pathPrefix, sticky
// settings from spec.traffic.router; versions stable, canary and previous
// from status, weighted by status.traffic (a version traffic leaves out has
// weight 0); mirrorPercent to the canary while there is one; each version's
// endpoints the ready addresses (conditions.ready not false) of the
// EndpointSlices in the deployment's namespace labelled with its name and
// version, on the slice's port named "http" (or its only port). A deployment
// with no status yet gets a route with no versions: the router answers 503
// "not ready", not 404. A deployment whose route would not Validate (weights
// not summing to 100, a model another deployment already serves) is left out
// with the reason in `problems`; the others are kept.
BuiltRoutes BuildRouteConfig(const std::vector<kube::Object>& deployments,
                             const std::vector<kube::Object>& endpoint_slices, uint64_t generation);

struct ApiSourceOptions {
  std::string ns;  // Empty: every namespace.
  std::chrono::milliseconds resync{std::chrono::minutes(10)};
};

struct ApiSourceStats {
  uint64_t generation = 0;  // Of the last config applied.
  int routes = 0;
  std::vector<std::string> problems;  // Of the last build.
};

class ApiSource {
 public:
  using ApplyFunc = std::function<void(RouteConfig)>;

  // Watches both kinds through `client`, which must outlive the source.
  ApiSource(kube::Client& client, ApiSourceOptions options, ApplyFunc apply);
  // Watches ModelDeployments through `deployments_client` (the cluster that
  // holds them: the hub) and EndpointSlices through `slices_client` (the
  // cluster whose pods this router reaches). Both must outlive the source;
  // they may be the same client. options.ns applies to both.
  ApiSource(kube::Client& deployments_client, kube::Client& slices_client, ApiSourceOptions options,
            ApplyFunc apply);
  ~ApiSource();
  ApiSource(const ApiSource&) = delete;
  ApiSource& operator=(const ApiSource&) = delete;

  // Starts both informers. Changes are applied once both have listed.
  void Start();
  void Stop();
  // True once the first config was applied.
  bool synced() const;
  // Waits for both informers' first lists and applies the first config
  // (also when no change has come since). False after `timeout`.
  bool WaitForSync(std::chrono::milliseconds timeout);
  ApiSourceStats stats() const;
  // The informers' last errors (ok when both are healthy), for /readyz. With
  // two clients, the ModelDeployments' error names their cluster's server.
  Status last_error() const;

 private:
  void Rebuild();

  kube::Informer deployments_;
  kube::Informer slices_;
  ApplyFunc apply_;
  mutable std::mutex mu_;
  std::condition_variable synced_cv_;
  bool synced_ = false;        // Guarded by mu_.
  ApiSourceStats stats_;       // Guarded by mu_.
  std::string last_problems_;  // Guarded by mu_: logged when it changes.
};

}  // namespace kiln::router

#endif  // KILN_ROUTER_API_SOURCE_H_
