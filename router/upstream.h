// Upstream: kiln-router's HTTP/1.1 client to the serving backends, on
// Boost.Beast's response parser over Boost.Asio, like the server side
// (base/http_server.h). A fixed set of I/O loops (base/io_threads.h) carries
// every call; no thread is tied to a request. A call runs on the loop of the
// thread that sends it (the loop of the client's connection, in kiln-router),
// else on the next loop in turn. Connections are kept alive and pooled per
// endpoint and loop (router/endpoint.h); a pooled connection the backend has closed
// meanwhile is noticed before use, and a request that met one anyway
// (nothing came back) is sent once more on a fresh connection.
//
// A call delivers the response as it arrives: the head with the body bytes
// that came with it, then each piece of the body as it is read (a streamed
// SSE body as its events come, no buffering), then the end. Cancel (the client went away) closes
// the backend connection, which is how kiln-worker learns to stop generating.
//
// Timeouts: connect_timeout to connect; response_timeout from the request's
// last byte to the response head (a long prompt's prefill); idle_timeout
// between pieces of the body.
#ifndef KILN_ROUTER_UPSTREAM_H_
#define KILN_ROUTER_UPSTREAM_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/io_threads.h"
#include "router/endpoint.h"

namespace kiln::router {

struct UpstreamOptions {
  int io_threads = 2;
  // Threads shared with the router's server (io_threads is then ignored):
  // a request and its backend call run on the same threads.
  std::shared_ptr<IoThreads> shared_io;
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(2)};
  std::chrono::milliseconds response_timeout{std::chrono::minutes(5)};
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(1)};
  // How long a pooled connection may sit unused; below the backends' own
  // keep-alive timeout (kiln-worker's is 75 s) so they rarely close first.
  std::chrono::milliseconds pool_idle{std::chrono::seconds(50)};
  size_t max_idle_per_endpoint = 1024;
  size_t max_response_header_bytes = 64 << 10;
};

struct UpstreamRequest {
  std::string method;                                        // "POST"
  std::string target;                                        // "/v1/completions?x=1"
  std::vector<std::pair<std::string, std::string>> headers;  // Without Content-Length.
  std::string body;
};

struct UpstreamHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // Hop-by-hop ones left out.
  std::string content_type;
  bool has_length = false;  // Content-Length given (else chunked or to EOF).
  uint64_t length = 0;
  std::string first_body;  // The body that came with the head (OnBody has the rest).
};

enum class UpstreamError {
  kNone,
  kConnect,    // Could not connect (refused, unreachable, connect timeout).
  kTimeout,    // No response head, or no body bytes, in time.
  kReset,      // The backend closed or reset the connection before the end.
  kProtocol,   // A malformed or oversized response.
  kCancelled,  // Cancel was called.
};
const char* UpstreamErrorName(UpstreamError error);  // "connect", "timeout", ...

// Receives one call's response, one callback at a time, on an I/O thread.
// Must not block.
class UpstreamHandler {
 public:
  virtual ~UpstreamHandler() = default;
  virtual void OnHead(UpstreamHead head) = 0;
  virtual void OnBody(std::string data) = 0;
  // Exactly once: kNone after the whole body, else the error (possibly
  // before OnHead).
  virtual void OnDone(UpstreamError error, const std::string& message) = 0;
};

class UpstreamCall {
 public:
  virtual ~UpstreamCall() = default;
  // Aborts the call (any thread, any time; after the end it does nothing).
  virtual void Cancel() = 0;
};

class Upstream {
 public:
  explicit Upstream(UpstreamOptions options);
  ~Upstream();  // Stops the I/O threads; calls still open end unanswered.
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;

  // Sends `request` to `endpoint`. The endpoint's outstanding count holds
  // the call from now until OnDone.
  std::shared_ptr<UpstreamCall> Send(std::shared_ptr<Endpoint> endpoint,
                                     std::shared_ptr<const UpstreamRequest> request,
                                     std::shared_ptr<UpstreamHandler> handler);

  EndpointRegistry& registry();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::router

#endif  // KILN_ROUTER_UPSTREAM_H_
