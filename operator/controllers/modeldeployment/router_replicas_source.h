// RouterReplicasMetricsSource: the rollout analysis's router metrics from
// every ready kiln-router replica behind its Service, not just the one a
// request through the Service happens to reach. Each measurement lists the
// Service's EndpointSlices (discovery.k8s.io/v1, label
// kubernetes.io/service-name), asks every ready replica for
// GET /debug/summary?window=<N>s in parallel, merges their counts and
// latency buckets (router/window_summary.h) and computes the figures from
// the merged buckets, as one router that saw all the requests would.
//
// A replica that does not answer fails the whole measurement (an error
// naming it, which the analysis counts Inconclusive): the traffic it carried
// is unknown, so judging on the others would judge on part of it. Thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICAS_SOURCE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICAS_SOURCE_H_

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "kube/client.h"
#include "kube/http.h"
#include "operator/controllers/modeldeployment/metrics_source.h"
#include "router/window_summary.h"

namespace kiln::modeldeployment {

struct RouterReplicasOptions {
  std::string ns;             // The router Service's namespace.
  std::string service;        // Its name.
  std::string port = "http";  // The EndpointSlice port's name, or a port number.
  std::chrono::milliseconds timeout{std::chrono::seconds(5)};  // For each replica's answer.
};

// --router-service ("namespace/name", or "name" in `default_ns`) and
// --router-port (a port name or 1..65535) → options. InvalidArgument saying
// which of the two is bad.
StatusOr<RouterReplicasOptions> ParseRouterReplicasOptions(const std::string& service,
                                                           const std::string& port,
                                                           const std::string& default_ns);

struct RouterReplica {
  std::string name;     // The endpoint's pod (targetRef), else its address.
  std::string address;  // "host:port" ("[v6]:port").
};

// The ready endpoints of `slices` on `port`, one per pod, sorted by name. A
// port name is looked up in each slice's ports (a slice without it adds
// nothing); a number is used as is. An endpoint counts unless its ready
// condition is false (absent means ready, as the EndpointSlice API says). A
// pod in two slices (dual stack: IPv4 and IPv6) is taken once, by its IPv4
// address; FQDN slices are ignored.
std::vector<RouterReplica> ReadyRouterReplicas(const std::vector<nlohmann::json>& slices,
                                               const std::string& port);

// The versions of `route` in a (merged) summary, their figures computed from
// its buckets.
TrafficWindow TrafficWindowOf(const router::WindowSummary& summary, const std::string& route);

class RouterReplicasMetricsSource final : public MetricsSource {
 public:
  // `client` (the cluster the router runs in) must outlive this.
  RouterReplicasMetricsSource(kube::Client& client, RouterReplicasOptions options);
  RouterReplicasMetricsSource(const RouterReplicasMetricsSource&) = delete;
  RouterReplicasMetricsSource& operator=(const RouterReplicasMetricsSource&) = delete;

  // The merged window of every ready replica. Unavailable when none is
  // ready, or when any fails to answer with a summary (all such named with
  // their errors); the EndpointSlice list's error as is.
  StatusOr<TrafficWindow> Window(const std::string& route, int window_seconds) override;

 private:
  StatusOr<router::WindowSummary> Ask(const RouterReplica& replica, int window_seconds);
  // One transport per address, kept while the address is a replica's.
  StatusOr<std::shared_ptr<kube::HttpTransport>> TransportFor(const std::string& address);
  void ForgetAllBut(const std::vector<RouterReplica>& replicas);

  kube::Client& client_;
  const RouterReplicasOptions options_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<kube::HttpTransport>> transports_;  // Guarded by mu_.
};

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICAS_SOURCE_H_
