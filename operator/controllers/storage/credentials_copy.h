// kiln's copy of an S3 credentials Secret in a member cluster, kept current.
// A hub object (TrainingJob, ModelDeployment) with spec.storage.s3 names a
// Secret in the hub; pods kiln makes in another member cluster mount kiln's
// copy of it there (s3_access.h's MemberCopy), which carries the hub object's
// UID as a label so that a Secret of the same name that someone else made is
// never taken over. Thread-safe (the client is).
#ifndef KILN_OPERATOR_CONTROLLERS_STORAGE_CREDENTIALS_COPY_H_
#define KILN_OPERATOR_CONTROLLERS_STORAGE_CREDENTIALS_COPY_H_

#include <string>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "kube/client.h"

namespace kiln::s3access {

// Makes `wanted` (a MemberCopy) exist through `member` as it is: created when
// missing, updated when its data, type or labels differ. FailedPrecondition
// when a Secret of that name exists without label `uid_label` = `uid` (not
// kiln's copy for this object; `owner` names the object in the message, e.g.
// "job" or "deployment"); the client's error otherwise.
Status SyncCredentialsCopy(kube::Client& member, const nlohmann::json& wanted,
                           const std::string& uid_label, const std::string& uid,
                           const std::string& owner);

}  // namespace kiln::s3access

#endif  // KILN_OPERATOR_CONTROLLERS_STORAGE_CREDENTIALS_COPY_H_
