// PrometheusSource: the value of one PromQL query, for the rollout analysis's
// `prometheus` metrics. The production source asks the Prometheus HTTP API
// (GET <address>/api/v1/query?query=...) and takes the first sample of a
// vector result, or a scalar; unit tests use a fake. Implementations are
// thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_PROMETHEUS_SOURCE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_PROMETHEUS_SOURCE_H_

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "base/statusor.h"
#include "kube/http.h"

namespace kiln::modeldeployment {

class PrometheusSource {
 public:
  virtual ~PrometheusSource() = default;
  // The query's value now at Prometheus `address` (http://host:port); none
  // when the result is empty or not a number (no data yet). An error when
  // Prometheus cannot be asked or refuses the query.
  virtual StatusOr<std::optional<double>> Query(const std::string& address,
                                                const std::string& query) = 0;
};

// A /api/v1/query response body → its value (as Query). InvalidArgument for
// a body that is not one; FailedPrecondition naming Prometheus's error for a
// refused query.
StatusOr<std::optional<double>> ParsePrometheusResponse(const std::string& body);

// `query` with every {{version}} replaced by `version`.
std::string ExpandQuery(const std::string& query, const std::string& version);

// Over HTTP, one transport per address, each request within 5 s.
class HttpPrometheusSource final : public PrometheusSource {
 public:
  StatusOr<std::optional<double>> Query(const std::string& address,
                                        const std::string& query) override;

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<kube::HttpTransport>> transports_;  // Guarded by mu_.
};

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_PROMETHEUS_SOURCE_H_
