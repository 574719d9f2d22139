// Helpers for tests that talk to the operator's plain-HTTP endpoints: a free
// loopback port to serve on, and a GET through kiln's own HTTP transport.
#ifndef KILN_TESTS_SUPPORT_HTTP_PROBE_H_
#define KILN_TESTS_SUPPORT_HTTP_PROBE_H_

#include <unistd.h>

#include <string>

#include <netinet/in.h>
#include <sys/socket.h>

#include "kube/http.h"

namespace kiln::testing {

// A loopback port that was free a moment ago (the kernel's pick for port 0);
// 0 if none could be had.
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// GET (or `method`) `path` on `url` ("http://host:port"); the error when no
// response came back.
inline StatusOr<kube::HttpResponse> HttpFetch(const std::string& url, const std::string& path,
                                              const std::string& method = "GET") {
  kube::RestConfig config;
  config.server = url;
  KILN_ASSIGN_OR_RETURN(auto transport, kube::NewHttpTransport(config));
  kube::HttpRequest req;
  req.method = method;
  req.path = path;
  req.timeout = std::chrono::seconds(10);
  return transport->Do(req);
}

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_HTTP_PROBE_H_
