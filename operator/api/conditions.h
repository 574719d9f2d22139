// SetCondition: a kiln object's status condition, set as Kubernetes' own
// controllers set theirs (meta.SetStatusCondition): the transition time moves
// only when the condition's status does.
#ifndef KILN_OPERATOR_API_CONDITIONS_H_
#define KILN_OPERATOR_API_CONDITIONS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "operator/api/v1alpha1/common.h"

namespace kiln::api {

// Sets condition `type` in `status.conditions` (any kiln status with a
// `std::optional<std::vector<v1alpha1::Condition>> conditions`); `now` is an
// RFC 3339 time.
template <typename Status>
void SetCondition(Status& status, const std::string& type, bool value, const std::string& reason,
                  const std::string& message, const std::string& now,
                  std::optional<int64_t> generation) {
  if (!status.conditions) status.conditions.emplace();
  const std::string s = value ? "True" : "False";
  for (auto& c : *status.conditions) {
    if (c.type != type) continue;
    if (c.status != s) c.last_transition_time = now;
    c.status = s;
    c.reason = reason;
    c.message = message;
    c.observed_generation = generation;
    return;
  }
  status.conditions->push_back({type, s, generation, now, reason, message});
}

}  // namespace kiln::api

#endif  // KILN_OPERATOR_API_CONDITIONS_H_
