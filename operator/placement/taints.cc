#include "operator/placement/taints.h"

namespace kiln::placement {

bool Tolerates(const Toleration& toleration, const Taint& taint) {
  if (!toleration.effect.empty() && toleration.effect != taint.effect) return false;
  if (toleration.operator_ == "Exists") {
    return toleration.key.empty() || toleration.key == taint.key;
  }
  // Equal (also the default when the operator is empty).
  return toleration.key == taint.key && toleration.value == taint.value;
}

const Taint* FirstUntoleratedTaint(const std::vector<Taint>& taints,
                                   const std::vector<Toleration>& tolerations) {
  for (const auto& taint : taints) {
    if (taint.effect == "PreferNoSchedule") continue;
    bool tolerated = false;
    for (const auto& t : tolerations) {
      if (Tolerates(t, taint)) {
        tolerated = true;
        break;
      }
    }
    if (!tolerated) return &taint;
  }
  return nullptr;
}

}  // namespace kiln::placement
