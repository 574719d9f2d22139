// MetricsSource: per-version measurements of a ModelDeployment's live
// traffic over a recent window, as the rollout analysis reads them. The
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

// One version's traffic in the window. Times in seconds.
struct VersionWindow {
  int64_t requests = 0;
  int64_t errors = 0;
  double error_rate = 0;   // errorRate: share of 5xx answers.
  double latency_p50 = 0;  // latencyP50
  double latency_p99 = 0;  // latencyP99
  double ttft_p99 = 0;     // timeToFirstToken (p99)
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

// kiln-router's /debug/summary body → the versions of `route`.
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
