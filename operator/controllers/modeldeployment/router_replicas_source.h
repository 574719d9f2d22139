// RouterReplicasMetricsSource: the rollout analysis's router metrics from
// every ready kiln-router replica behind its Service, not just the one a
// request through the Service happens to reach. Each measurement lists the
// Service's EndpointSlices (discovery.k8s.io/v1, label
// kubernetes.io/service-name), asks every ready replica for
// GET /debug/summary?window=<N>s in parallel, merges their counts and
// latency buckets (router/window_summary.h) and computes the figures from
// the merged buckets, as one router that saw all the requests would.
//
// Where the operator cannot reach the replicas' pod IPs (a member cluster's,
// from the hub), `through_api_server` asks each through the cluster's API
// server pod proxy instead, as the TrainingJob progress reader does.
//
// A replica that does not answer fails the whole measurement (an error
// naming it, which the analysis counts Inconclusive): the traffic it carried
// is unknown, so judging on the others would judge on part of it. Thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICAS_SOURCE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_ROUTER_REPLICAS_SOURCE_H_

#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/context.h"
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
  // Ask each replica through the client's API server, GET
  // /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/debug/summary (the
  // client needs `get` on pods/proxy), instead of at its address. The
  // EndpointSlice list and each answer then take at most `timeout`, the
  // client's retries included, and stay within the caller's Context.
  bool through_api_server = false;
};

// --router-service ("namespace/name", or "name" in `default_ns`) and
// --router-port (a port name or 1..65535) → options. InvalidArgument saying
// which of the two is bad.
StatusOr<RouterReplicasOptions> ParseRouterReplicasOptions(const std::string& service,
                                                           const std::string& port,
                                                           const std::string& default_ns);

struct RouterReplica {
  std::string name;     // The endpoint's targetRef, else its address.
  std::string pod;      // The targetRef's name when it is a Pod, else "".
  std::string address;  // "host:port" ("[v6]:port").
  int port = 0;         // The port in `address`.
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

// The summaries of the parts of a measurement (router replicas, member
// clusters), asked in parallel, merged: every part must answer, since the
// traffic of one that does not is unknown. Unavailable otherwise: "<n> of
// <all> <what>: <name_of(i)>: <why>; ...". Waits for every answer.
StatusOr<router::WindowSummary> MergeAnswers(
    std::vector<std::future<StatusOr<router::WindowSummary>>>& answers,
    const std::function<std::string(size_t)>& name_of, const std::string& what);

class RouterReplicasMetricsSource final : public MetricsSource {
 public:
  // `client` (the cluster the router runs in) must outlive this.
  RouterReplicasMetricsSource(kube::Client& client, RouterReplicasOptions options);
  RouterReplicasMetricsSource(const RouterReplicasMetricsSource&) = delete;
  RouterReplicasMetricsSource& operator=(const RouterReplicasMetricsSource&) = delete;

  // The summaries of every ready replica over the last `window_seconds`,
  // merged. Unavailable when none is ready, or when any fails to answer with
  // a summary (all such named with their errors; through the API server, a
  // replica that is not a pod cannot be asked); the EndpointSlice list's
  // error as is.
  StatusOr<router::WindowSummary> Summary(int window_seconds);

  // TrafficWindowOf(Summary(window_seconds), route).
  StatusOr<TrafficWindow> Window(const std::string& route, int window_seconds) override;

 private:
  StatusOr<router::WindowSummary> Ask(const RouterReplica& replica, int window_seconds);
  // Through the API server's pod proxy, by `deadline` (the caller's Context
  // shortened to the timeout).
  StatusOr<router::WindowSummary> AskThroughApiServer(const RouterReplica& replica,
                                                      int window_seconds, const Context& deadline);
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
