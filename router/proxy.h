// Proxy: kiln-router's request path. An HttpAsyncHandler for base's
// HttpServer that reads the body's "model" (and nothing else of it), picks a
// route, version and endpoint from the current RouteTable, and relays the
// request to the backend through the Upstream and the response back:
//  - a reply with a Content-Length (up to max_buffered_reply) goes back in
//    one write; anything else (an SSE stream of tokens) is passed through as
//    it arrives, piece by piece, with no buffering;
//  - the client going away cancels the backend call (kiln-worker stops
//    generating);
//  - a backend that refuses connections is skipped for another endpoint of
//    the same version (once per endpoint) before the client sees an error;
//  - errors are JSON in the OpenAI shape, {"error": {"message", "type",
//    "code"}}, naming the reason: 400 for a body that is not a JSON object or
//    a "model" that is not a string, 404 for a model no route serves, 503
//    when the route has no version or the version no ready endpoint, 502 when
//    the backend failed, 504 when it timed out; a stream that breaks after it
//    started ends with an SSE error event ("data: {"error": ...}") and the
//    stream's end, which OpenAI clients raise as an error; any other body
//    that breaks is cut off (HttpResponder::Abort), never ended as if whole;
//  - the response carries x-kiln-version: the version that answered.
// SetConfig swaps in a new table whole: requests already picked finish on
// the old one, every request read after SetConfig returns uses the new one.
#ifndef KILN_ROUTER_PROXY_H_
#define KILN_ROUTER_PROXY_H_

#include <cstddef>
#include <memory>
#include <mutex>

#include "base/http_server.h"
#include "base/status.h"
#include "router/route_config.h"
#include "router/route_table.h"
#include "router/router_metrics.h"
#include "router/upstream.h"

namespace kiln::router {

struct ProxyOptions {
  size_t max_buffered_reply = 1 << 20;
};

class Proxy {
 public:
  // `upstream` and `metrics` must outlive the proxy; the upstream must also
  // outlive every route table (they hold its pooled connections).
  Proxy(Upstream& upstream, RouterMetrics& metrics, ProxyOptions options = {});

  // Builds and swaps in a table for `config` (Validated here too). On an
  // error the table in use stays.
  Status SetConfig(RouteConfig config);
  // The table in use; null before the first SetConfig.
  std::shared_ptr<const RouteTable> table() const;

  // Takes the request's body and header values (no copies on the way).
  void Handle(HttpRequest& request, std::shared_ptr<HttpResponder> responder);

 private:
  Upstream& upstream_;
  RouterMetrics& metrics_;
  const ProxyOptions options_;
  mutable std::mutex mu_;
  std::shared_ptr<const RouteTable> table_;  // Guarded by mu_.
};

// The OpenAI-shaped error body: {"error": {"message": .., "type": .., "code": ..}}.
HttpReply JsonError(int status, const std::string& type, const std::string& code,
                    const std::string& message);

}  // namespace kiln::router

#endif  // KILN_ROUTER_PROXY_H_
