// The reconcile contract, in the style of controller-runtime: a Reconciler is
// told only which object to look at (a Request), reads the world afresh and
// drives it toward the desired state. It is level-based and idempotent: it may
// be called any number of times for the same object. It is handed a Context
// and returns promptly once the context is done (the controller is stopping).
#ifndef KILN_RUNTIME_RECONCILE_H_
#define KILN_RUNTIME_RECONCILE_H_

#include <chrono>
#include <string>

#include "base/statusor.h"
#include "runtime/context.h"

namespace kiln::runtime {

struct Request {
  std::string ns;  // Empty for cluster-scoped objects.
  std::string name;

  // "ns/name" or "name": the work-queue key.
  std::string Key() const { return ns.empty() ? name : ns + "/" + name; }
  static Request FromKey(const std::string& key) {
    auto slash = key.find('/');
    if (slash == std::string::npos) return {"", key};
    return {key.substr(0, slash), key.substr(slash + 1)};
  }
};

struct Result {
  // Look again after this long even if nothing changes (0: don't).
  std::chrono::milliseconds requeue_after{0};
};

// Marks an error that retrying cannot fix (bad spec, permanent refusal): the
// controller records it and does not requeue. Every other error is retried
// with per-key exponential backoff.
class TerminalError final : public StatusDetail {};

inline Status Terminal(Status s) { return s.WithDetail(std::make_shared<TerminalError>()); }
inline bool IsTerminal(const Status& s) { return s.detail<TerminalError>() != nullptr; }

class Reconciler {
 public:
  virtual ~Reconciler() = default;
  // Not-found objects are not errors: return an empty Result. Once
  // `ctx.done()`, return (ctx.Err() is fine): an error returned after the
  // controller was stopped is not counted as a failure and not retried.
  virtual StatusOr<Result> Reconcile(const Context& ctx, const Request& request) = 0;
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_RECONCILE_H_
