// Fakes for the router replica sources' tests: the kiln-router Service's
// EndpointSlices, and kiln-router replicas that answer only through a fake
// API server's pod proxy, as a member cluster's do when seen from the hub.
#ifndef KILN_TESTS_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICA_FAKES_H_
#define KILN_TESTS_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICA_FAKES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "router/router_metrics.h"
#include "tests/support/fake_api_server.h"

namespace kiln::testing {

inline constexpr const char* kRouterNs = "kiln-system";
inline constexpr const char* kRouterService = "kiln-router";
inline constexpr const char* kRoute = "serving/chat";
// The second every stand-in router's clock reads.
inline constexpr int64_t kNow = 5000;

// An endpoint of pod `pod` (a Pod targetRef) at `ip`; conditions.ready as
// given, none at all for nullopt.
inline nlohmann::json Endpoint(const std::string& pod, const std::string& ip,
                               std::optional<bool> ready = true) {
  nlohmann::json e = {{"addresses", {ip}}, {"targetRef", {{"kind", "Pod"}, {"name", pod}}}};
  if (ready) e["conditions"] = {{"ready", *ready}};
  return e;
}

// An EndpointSlice of `service` in kRouterNs with port "http" = `port`.
inline nlohmann::json Slice(const std::string& name, int port, const nlohmann::json& endpoints,
                            const std::string& service = kRouterService,
                            const std::string& type = "IPv4") {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"name", name},
            {"namespace", kRouterNs},
            {"labels", {{"kubernetes.io/service-name", service}}}}},
          {"addressType", type},
          {"ports", {{{"name", "http"}, {"port", port}, {"protocol", "TCP"}}}},
          {"endpoints", endpoints}};
}

// One request to `version` of kRoute that took `seconds` (first byte at a
// tenth of it), as kiln-router records it.
inline void Serve(router::RouterMetrics& metrics, const std::string& version, double seconds,
                  bool failed = false) {
  router::RouterMetrics::Version* v = metrics.For(kRoute, version);
  metrics.BeginRequest(v);
  metrics.EndRequest(v, {.status = failed ? 502 : 200,
                         .error = failed ? "connect" : nullptr,
                         .seconds = seconds,
                         .first_byte_seconds = seconds / 10});
}

// One copy of a request mirrored to `version` of kRoute that took `seconds`
// (first byte at a tenth of it), as kiln-router records it.
inline void Mirror(router::RouterMetrics& metrics, const std::string& version, double seconds,
                   bool failed = false) {
  metrics.Mirrored(metrics.For(kRoute, version), {.status = failed ? 503 : 200,
                                                  .error = failed ? "status_5xx" : nullptr,
                                                  .seconds = seconds,
                                                  .first_byte_seconds = seconds / 10});
}

// kiln-router pods of one cluster, reachable only through `api`'s pod proxy:
// each in its own EndpointSlice at an address in 192.0.2.0/24 (TEST-NET-1,
// where nothing answers), each with its own metrics. The proxy answers
// GET .../pods/<pod>:<port>/proxy/debug/summary with the pod's summary over
// `window_seconds` (the proxy handler is not given the query: tests read
// it in api.requests()). Thread-safe once the pods are added.
class ProxiedRouters {
 public:
  ProxiedRouters(FakeApiServer& api, int window_seconds)
      : api_(api), window_seconds_(window_seconds) {
    api_.SetProxy([this](const std::string& ns, const std::string& pod, const std::string& port,
                         const std::string& path) { return Answer(ns, pod, port, path); });
  }
  ~ProxiedRouters() { api_.SetProxy(nullptr); }
  ProxiedRouters(const ProxiedRouters&) = delete;
  ProxiedRouters& operator=(const ProxiedRouters&) = delete;

  // Adds ready pod `pod` serving on `port`; its metrics, to record requests in.
  router::RouterMetrics& Add(const std::string& pod, int port) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string ip = "192.0.2." + std::to_string(pods_.size() + 1);
    api_.Put("endpointslices",
             Slice(pod + "-slice", port, nlohmann::json::array({Endpoint(pod, ip)})));
    auto& metrics = pods_[pod + ":" + std::to_string(port)];
    metrics = std::make_unique<router::RouterMetrics>([] { return kNow; });
    return *metrics;
  }
  // `pod`'s proxy answers 500 from now on.
  void Fail(const std::string& pod) {
    std::lock_guard<std::mutex> lock(mu_);
    failing_.insert(pod);
  }
  // "<ns>/<pod>:<port><path>" of each proxied request so far.
  std::vector<std::string> asked() {
    std::lock_guard<std::mutex> lock(mu_);
    return asked_;
  }

 private:
  kube::HttpResponse Answer(const std::string& ns, const std::string& pod, const std::string& port,
                            const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    asked_.push_back(ns + "/" + pod + ":" + port + path);
    auto it = pods_.find(pod + ":" + port);
    if (ns != kRouterNs || it == pods_.end() || path != "/debug/summary") {
      return {404, {}, "no such pod, port or path"};
    }
    if (failing_.count(pod) > 0) return {500, {}, "broken"};
    return {
        200, {{"content-type", "application/json"}}, it->second->Summary(window_seconds_).dump()};
  }

  FakeApiServer& api_;
  const int window_seconds_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<router::RouterMetrics>> pods_;  // By "pod:port".
  std::set<std::string> failing_;
  std::vector<std::string> asked_;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICA_FAKES_H_
