// Credentials: produces the Authorization header for requests to one API
// server from a RestConfig's bearer token, token file (re-read so rotated
// service-account tokens are used) or exec credential plugin (run on demand,
// cached until shortly before the expiry it reports). Thread-safe.
#ifndef KILN_KUBE_CREDENTIALS_H_
#define KILN_KUBE_CREDENTIALS_H_

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "base/statusor.h"
#include "kube/rest_config.h"

namespace kiln::kube {

// What an exec plugin returned: a token, or a client certificate and key.
struct ExecCredential {
  std::string token;
  std::string client_cert_pem;
  std::string client_key_pem;
  // Seconds precision: a nanosecond system_clock overflows after 2262, and
  // plugins do hand out far-future expiries.
  std::optional<std::chrono::sys_seconds> expiry;
};

// Runs the plugin described by `exec` for `config` and parses its
// ExecCredential. FailedPrecondition with the install hint when the command is
// missing; Unauthenticated when it fails or prints something unusable.
StatusOr<ExecCredential> RunExecPlugin(const ExecConfig& exec, const RestConfig& config);

class Credentials {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  explicit Credentials(RestConfig config, Clock clock = std::chrono::system_clock::now);
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;

  // The value for the Authorization header ("Bearer ..."), or empty when the
  // config authenticates by client certificate or not at all.
  StatusOr<std::string> AuthorizationHeader();

  // Forgets a cached exec credential, e.g. after the server answered 401.
  void Invalidate();

  // Client certificate and key from an exec plugin, when it returned them
  // (empty otherwise). The transport must be rebuilt when these change.
  StatusOr<ExecCredential> ExecClientCertificate();

 private:
  StatusOr<ExecCredential> CachedExec();

  const RestConfig config_;
  const Clock clock_;
  std::mutex mu_;
  std::optional<ExecCredential> cached_;  // Guarded by mu_.
};

}  // namespace kiln::kube

#endif  // KILN_KUBE_CREDENTIALS_H_
