// Taint and Toleration as corev1 has them, and the one rule placement needs:
// may a pod with these tolerations be placed on a node with these taints.
// Plain values; thread-safe to share once built.
#ifndef KILN_OPERATOR_PLACEMENT_TAINTS_H_
#define KILN_OPERATOR_PLACEMENT_TAINTS_H_

#include <string>
#include <vector>

namespace kiln::placement {

struct Taint {
  std::string key;
  std::string value;
  std::string effect;  // NoSchedule, PreferNoSchedule or NoExecute

  bool operator==(const Taint&) const = default;
};

struct Toleration {
  std::string key;                  // empty with Exists: every taint
  std::string operator_ = "Equal";  // Equal or Exists
  std::string value;
  std::string effect;  // empty: every effect

  bool operator==(const Toleration&) const = default;
};

// True when `toleration` tolerates `taint`, by corev1's rules.
bool Tolerates(const Toleration& toleration, const Taint& taint);

// The first NoSchedule or NoExecute taint none of `tolerations` tolerates, or
// nullptr when the pod may go there. PreferNoSchedule never blocks: it is a
// preference, and placement does not rank by it.
const Taint* FirstUntoleratedTaint(const std::vector<Taint>& taints,
                                   const std::vector<Toleration>& tolerations);

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_TAINTS_H_
