// HttpTransport: the one interface through which kiln's Kubernetes client talks
// to an API server, so unit tests can substitute a fake and integration tests
// use the real cpprestsdk transport. Implementations are thread-safe.
#ifndef KILN_KUBE_HTTP_H_
#define KILN_KUBE_HTTP_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "base/statusor.h"
#include "kube/rest_config.h"

namespace kiln::kube {

struct HttpRequest {
  std::string method = "GET";
  std::string path;  // Absolute path plus query, e.g. "/api/v1/pods?limit=10".
  std::map<std::string, std::string> headers;
  std::string body;
  // Whole request for Do(); for Stream(), the longest silence between chunks.
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // Names lower-cased.
  std::string body;
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;

  // Sends `request` and returns the whole response, whatever its status code.
  // Errors are for failures to get a response at all: Unavailable (cannot
  // connect, connection lost), DeadlineExceeded, FailedPrecondition (TLS
  // verification or client-certificate problems).
  virtual StatusOr<HttpResponse> Do(const HttpRequest& request) = 0;

  // Sends `request` and delivers the response body in chunks as it arrives:
  // `on_head` once with the status and headers (body empty), then `on_chunk`
  // for each piece until the server ends the stream, `on_chunk` returns false,
  // or `*cancel` becomes true. Returns ok when the stream ended normally or was
  // stopped by the caller.
  virtual Status Stream(const HttpRequest& request,
                        const std::function<void(const HttpResponse&)>& on_head,
                        const std::function<bool(std::string_view)>& on_chunk,
                        const std::atomic<bool>* cancel) = 0;
};

// The production transport over cpprestsdk, trusting exactly `config.ca_pem`
// (or the system roots when it is empty), presenting the client certificate if
// any. Authentication headers are added by the caller. InvalidArgument for an
// unusable configuration (e.g. a CA or key that is not PEM).
StatusOr<std::unique_ptr<HttpTransport>> NewHttpTransport(const RestConfig& config);

}  // namespace kiln::kube

#endif  // KILN_KUBE_HTTP_H_
