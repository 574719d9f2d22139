// HealthChecks: named checks behind one probe endpoint (/healthz or /readyz),
// answering as kube-apiserver does: 200 "ok" when every check passes, 500
// naming the failures otherwise; "?verbose" lists every check ("[+]name ok",
// "[-]name failed: reason"); "/readyz/<name>" runs one check; "?exclude=name"
// skips one. Thread-safe.
#ifndef KILN_RUNTIME_HEALTH_CHECKS_H_
#define KILN_RUNTIME_HEALTH_CHECKS_H_

#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "base/http_server.h"
#include "base/status.h"

namespace kiln::runtime {

class HealthChecks {
 public:
  explicit HealthChecks(std::string endpoint) : endpoint_(std::move(endpoint)) {}

  // A check returns ok or why it fails; it must be quick (probes time out).
  void Add(const std::string& name, std::function<Status()> check);
  // Serves `endpoint` and `endpoint/<name>`.
  HttpReply Serve(const HttpRequest& query) const;
  const std::string& endpoint() const { return endpoint_; }

 private:
  const std::string endpoint_;
  mutable std::mutex mu_;
  std::map<std::string, std::function<Status()>> checks_;  // Guarded by mu_.
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_HEALTH_CHECKS_H_
