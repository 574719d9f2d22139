// A hub namespace in a member cluster. The hub's namespaces need not exist in
// every member, so what kiln makes there for a hub object (a TrainingJob's
// workers, a ModelDeployment's versions) first makes sure its namespace
// exists: created when missing, labelled as kiln's, and left in place when
// the object goes (other things may have moved in).
#ifndef KILN_OPERATOR_FLEET_MEMBER_NAMESPACE_H_
#define KILN_OPERATOR_FLEET_MEMBER_NAMESPACE_H_

#include <string>

#include "base/status.h"
#include "kube/client.h"

namespace kiln::fleet {

// Creates namespace `ns` through `member` unless it exists (a creation that
// races another is fine). The client's error otherwise.
Status EnsureNamespace(kube::Client& member, const std::string& ns);

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_MEMBER_NAMESPACE_H_
