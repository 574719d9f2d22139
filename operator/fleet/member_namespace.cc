#include "operator/fleet/member_namespace.h"

#include "kube/api_error.h"
#include "operator/api/labels.h"

namespace kiln::fleet {

Status EnsureNamespace(kube::Client& member, const std::string& ns) {
  auto got = member.Get(kube::resources::kNamespaces, "", ns);
  if (got.ok()) return Status::Ok();
  if (!kube::IsNotFound(got.status())) return got.status();
  Status made =
      member
          .Create(kube::resources::kNamespaces, "",
                  {{"apiVersion", "v1"},
                   {"kind", "Namespace"},
                   {"metadata",
                    {{"name", ns}, {"labels", {{api::kManagedByLabel, api::kManagedByValue}}}}}})
          .status();
  return made.ok() || kube::IsAlreadyExists(made) ? Status::Ok() : made;
}

}  // namespace kiln::fleet
