// ApiErrors: the one sentence a user sees when a call to the API server
// fails — `trainingjob "x" not found in namespace "y"`, which verb on which
// resource and namespace RBAC refused, a server that cannot be reached —
// instead of the raw request line. Pure; thread-safe.
#ifndef KILN_PLUGIN_API_ERRORS_H_
#define KILN_PLUGIN_API_ERRORS_H_

#include <string>

#include "base/status.h"

namespace kiln::plugin {

// What was being attempted when the call failed.
struct Attempt {
  std::string verb;      // get, list, watch, patch: as RBAC names it.
  std::string resource;  // trainingjobs.kiln.dev, pods, secrets.
  std::string kind;      // trainingjob, pod: as messages name one object.
  std::string ns;        // Empty for cluster-scoped resources.
  std::string name;      // Empty for lists.
  std::string server;    // The API server's URL.
};

// The message for `status`, a failure of `attempt`.
std::string Explain(const Status& status, const Attempt& attempt);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_API_ERRORS_H_
