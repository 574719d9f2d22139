// RequestObserver: how a Client reports each API request it makes, so the
// controller runtime can export request latency and result codes as metrics
// without the client depending on a metrics library.
#ifndef KILN_KUBE_REQUEST_OBSERVER_H_
#define KILN_KUBE_REQUEST_OBSERVER_H_

#include <chrono>
#include <string_view>

namespace kiln::kube {

struct RequestRecord {
  std::string_view host;    // The API server, as configured.
  std::string_view method;  // HTTP method; "WATCH" for streaming requests.
  int code = 0;             // HTTP status; 0 when no response came back.
  // Whole request; for watches, until the response headers arrived.
  std::chrono::duration<double> latency{0};
};

class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  // Called once per attempt (retries are separate requests), from the thread
  // that made it. Must be cheap and thread-safe.
  virtual void ObserveRequest(const RequestRecord& record) = 0;
};

}  // namespace kiln::kube

#endif  // KILN_KUBE_REQUEST_OBSERVER_H_
