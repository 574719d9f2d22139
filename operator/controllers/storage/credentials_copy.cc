#include "operator/controllers/storage/credentials_copy.h"

#include "kube/api_error.h"
#include "operator/controllers/storage/s3_access.h"

namespace kiln::s3access {

using nlohmann::json;

Status SyncCredentialsCopy(kube::Client& member, const json& wanted, const std::string& uid_label,
                           const std::string& uid, const std::string& owner) {
  const std::string ns = wanted["metadata"].value("namespace", "");
  const std::string name = wanted["metadata"].value("name", "");
  auto have = member.Get(kube::resources::kSecrets, ns, name);
  if (!have.ok()) {
    if (!kube::IsNotFound(have.status())) return have.status();
    Status made = member.Create(kube::resources::kSecrets, ns, wanted).status();
    // Made meanwhile by another reconcile: the next one compares it.
    return kube::IsAlreadyExists(made) ? Status::Ok() : made;
  }
  if (have->value("metadata", json::object())
          .value("labels", json::object())
          .value(uid_label, "") != uid) {
    return Status::FailedPrecondition("Secret " + ns + "/" + name +
                                      " exists and is not kiln's copy of this " + owner +
                                      "'s S3 credentials; rename or delete it");
  }
  if (CopyCurrent(*have, wanted)) return Status::Ok();
  json next = wanted;
  next["metadata"]["resourceVersion"] = (*have)["metadata"].value("resourceVersion", "");
  return member.Update(kube::resources::kSecrets, next).status();
}

}  // namespace kiln::s3access
