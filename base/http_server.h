// HttpServer: serves a process's few plain-HTTP endpoints (health probes,
// metrics) on one address, over cpprestsdk's http_listener. Routes match by
// path prefix (longest wins); only GET and HEAD are served (405 otherwise),
// unknown paths get 404. Handlers run on cpprestsdk's thread pool and must be
// thread-safe.
#ifndef KILN_BASE_HTTP_SERVER_H_
#define KILN_BASE_HTTP_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/statusor.h"

namespace kiln {

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpQuery {
  std::string path;                          // e.g. "/readyz/informers"
  std::map<std::string, std::string> query;  // decoded ?key=value pairs
};

using HttpHandler = std::function<HttpReply(const HttpQuery&)>;

class HttpServer {
 public:
  // Listens on `bind_address`: ":8080" (all interfaces), "127.0.0.1:8080" or
  // "[::1]:8080". InvalidArgument for a malformed address, Unavailable when
  // the port cannot be bound.
  static StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& bind_address,
                                                     std::map<std::string, HttpHandler> routes);
  virtual ~HttpServer() = default;
  // Stops listening; in-flight requests finish first.
  virtual void Stop() = 0;
  virtual const std::string& url() const = 0;  // e.g. "http://127.0.0.1:8080"
};

// Splits "host:port" (host may be empty or bracketed IPv6); InvalidArgument
// unless the port is 1-65535.
StatusOr<std::pair<std::string, int>> ParseBindAddress(const std::string& address);

}  // namespace kiln

#endif  // KILN_BASE_HTTP_SERVER_H_
