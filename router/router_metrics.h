// RouterMetrics: what kiln-router saw, per ModelDeployment (route) and
// version, in two forms:
//  - Prometheus, at /metrics:
//      kiln_router_requests_total{route,version,code}
//      kiln_router_errors_total{route,version,kind}   kind: connect, timeout,
//          reset, protocol (the backend), status_5xx (it answered 5xx),
//          no_endpoints, no_version; and with route="" (no route chosen):
//          bad_request, unknown_model, no_route, unknown_version
//      kiln_router_request_duration_seconds{route,version}       (histogram)
//      kiln_router_time_to_first_byte_seconds{route,version}     (histogram;
//          for a streamed completion, its first token)
//      kiln_router_tokens_total{route,version}  streamed events carrying
//          data, or the usage.completion_tokens of a whole JSON reply
//      kiln_router_in_flight{route,version}
//      kiln_router_client_cancelled_total{route,version}
//      kiln_router_mirror_requests_total{route,version,result}   (apart from
//          the requests above: a mirror's answer is discarded)
//      kiln_router_config_generation, kiln_router_routes
//      kiln_router_route_weight{route,version,role}  percent of the route's
//          traffic the table in use gives the version (role: stable, canary,
//          previous); a version gone from the table loses its series
//  - a windowed summary (Summary), for the rollout analysis: per version,
//    requests, errors, error rate, p50/p99 latency and time to first token
//    over the last `window` (1 s resolution, up to 10 minutes), from
//    log-spaced buckets (each within 12% of its values), with the counts and
//    buckets themselves so that the summaries of several router replicas
//    merge (router/window_summary.h); the same figures for the mirrored
//    copies a version answered, apart. /debug/summary serves it as JSON.
// Thread-safe.
#ifndef KILN_ROUTER_ROUTER_METRICS_H_
#define KILN_ROUTER_ROUTER_METRICS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "router/route_config.h"

namespace kiln::router {

struct RequestOutcome {
  int status = 0;                  // Sent to the client (0: none, the client left).
  const char* error = nullptr;     // An errors_total kind, or null.
  bool client_cancelled = false;   // The client went away first.
  double seconds = 0;              // Request read → response end.
  double first_byte_seconds = -1;  // → first body byte from the backend; <0: none.
  uint64_t tokens = 0;
};

class RouterMetrics {
 public:
  class Version;  // One (route, version)'s instruments.

  // `now` (seconds) is for tests; the default is the steady clock.
  explicit RouterMetrics(std::function<int64_t()> now_seconds = nullptr);
  ~RouterMetrics();
  RouterMetrics(const RouterMetrics&) = delete;
  RouterMetrics& operator=(const RouterMetrics&) = delete;

  // Stable for the metrics' life.
  Version* For(const std::string& route, const std::string& version);
  void BeginRequest(Version* v);  // In flight +1.
  void EndRequest(Version* v, const RequestOutcome& outcome);
  // A request refused before a version was chosen (kind as errors_total).
  void Rejected(const std::string& route, const char* kind, int status);
  // A mirrored copy to `v` ended: counted in mirror_requests_total by result
  // (its error kind, "cancelled" or "ok") and in the window apart from the
  // live requests. `outcome.status` is the backend's (no client saw it);
  // client_cancelled means the router cut it short (left out of the window).
  void Mirrored(Version* v, const RequestOutcome& outcome);
  // The route table now in use: its generation, its number of routes and
  // every version's weight.
  void SetConfig(const RouteConfig& config);

  std::string Scrape() const;
  // WindowSummary::ToJson of the last `window_seconds` (clamped to 1..599):
  // {"windowSeconds": 60, "buckets": {"schema": 1, ...}, "versions": [{
  //   "route": "default/chat", "version": "v2", "requests": 120, "errors": 3,
  //   "errorRate": 0.025, "latencyP50": .., "latencyP99": ..,
  //   "timeToFirstTokenP50": .., "timeToFirstToken": .., "tokens": ..,
  //   "requestsPerSecond": .., "latencyBuckets": [[bucket, count], ..],
  //   "timeToFirstTokenBuckets": [[bucket, count], ..],
  //   "mirrored": {"requests": .., "errors": .., ... the same fields}}]}
  // Times in seconds. errorRate, latencyP50, latencyP99 and timeToFirstToken
  // (p99) are the names ModelDeployment's router metrics use; a stream's
  // first token is its first body byte.
  // Versions without requests in the window are listed with zeros.
  nlohmann::json Summary(int window_seconds) const;

 private:
  std::function<int64_t()> now_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Histogram>& first_byte_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Counter>& cancelled_;
  prometheus::Family<prometheus::Counter>& mirrored_;
  prometheus::Gauge& generation_;
  prometheus::Gauge& routes_;
  prometheus::Family<prometheus::Gauge>& weights_;
  std::mutex config_mu_;
  // The weight series of the table in use, by (route, version, role); guarded by config_mu_.
  std::map<std::tuple<std::string, std::string, std::string>, prometheus::Gauge*> weight_series_;
  mutable std::shared_mutex mu_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Version>> versions_;  // mu_.
};

}  // namespace kiln::router

#endif  // KILN_ROUTER_ROUTER_METRICS_H_
