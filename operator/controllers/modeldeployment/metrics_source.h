// MetricsSource: per-version measurements of a ModelDeployment's traffic
// (live, and mirrored apart) over a recent window, as the rollout analysis reads them. The
// production source asks kiln-router for its windowed summary
// (GET /debug/summary?window=<seconds>, router/router_metrics.h); unit tests
// use a fake. Implementations are thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_METRICS_SOURCE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_METRICS_SOURCE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/statusor.h"
#include "kube/http.h"

namespace kiln::modeldeployment {

// One kind of request to a version in the window. Times in seconds.
struct TrafficFigures {
  int64_t requests = 0;
  int64_t errors = 0;
  double error_rate = 0;   // errorRate: share of failures and 5xx answers.
  double latency_p50 = 0;  // latencyP50
  double latency_p99 = 0;  // latencyP99
  double ttft_p99 = 0;     // timeToFirstToken (p99)
};

// One version's traffic in the window: the live requests clients sent it
// and, apart, the copies of other versions' requests the router mirrored to
// it (answers discarded). The live figures keep the flat fields every reader
// had before mirrors were counted (live() gives them as TrafficFigures).
// Times in seconds.
struct VersionWindow {
  int64_t requests = 0;
  int64_t errors = 0;
  double error_rate = 0;    // errorRate: share of failures and 5xx answers.
  double latency_p50 = 0;   // latencyP50
  double latency_p99 = 0;   // latencyP99
  double ttft_p99 = 0;      // timeToFirstToken (p99)
  TrafficFigures mirrored;  // All zero from a kiln-router that does not count mirrors.

  // `live` in the flat fields, beside `mirrored`.
  static VersionWindow Of(const TrafficFigures& live, const TrafficFigures& mirrored) {
    return {.requests = live.requests,
            .errors = live.errors,
            .error_rate = live.error_rate,
            .latency_p50 = live.latency_p50,
            .latency_p99 = live.latency_p99,
            .ttft_p99 = live.ttft_p99,
            .mirrored = mirrored};
  }

  // The live requests' figures.
  TrafficFigures live() const {
    return {.requests = requests,
            .errors = errors,
            .error_rate = error_rate,
            .latency_p50 = latency_p50,
            .latency_p99 = latency_p99,
            .ttft_p99 = ttft_p99};
  }
};

// By version.
using TrafficWindow = std::map<std::string, VersionWindow>;

class MetricsSource {
 public:
  virtual ~MetricsSource() = default;
  // The versions of route `route` ("namespace/name" of the ModelDeployment)
  // over the last `window_seconds`. Versions the source has not seen are
  // absent. An error when the source cannot be asked or answers nonsense.
  virtual StatusOr<TrafficWindow> Window(const std::string& route, int window_seconds) = 0;
};

// kiln-router's /debug/summary body → the versions of `route`; a version
// without "mirrored" (an older kiln-router) had no mirrored requests.
// InvalidArgument for a body that is not such a summary.
StatusOr<TrafficWindow> ParseRouterSummary(const std::string& body, const std::string& route);

// Asks kiln-router at `base_url` (http://host:port, e.g. the kiln-router
// Service) for GET /debug/summary?window=<N>s, each request within 5 s.
class RouterMetricsSource final : public MetricsSource {
 public:
  // InvalidArgument for a URL the HTTP transport cannot use.
  static StatusOr<std::unique_ptr<RouterMetricsSource>> New(const std::string& base_url);

  StatusOr<TrafficWindow> Window(const std::string& route, int window_seconds) override;

 private:
  RouterMetricsSource(std::string base_url, std::unique_ptr<kube::HttpTransport> transport);

  const std::string base_url_;
  std::unique_ptr<kube::HttpTransport> transport_;  // Thread-safe.
};

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_METRICS_SOURCE_H_
