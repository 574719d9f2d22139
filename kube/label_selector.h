// LabelSelector: a parsed Kubernetes label selector, matched against an
// object's labels the way the API server matches it: equality
// (`k=v`, `k==v`, `k!=v`), set-based (`k in (a,b)`, `k notin (a,b)`), existence
// (`k`, `!k`), requirements joined by commas (all must hold). The empty
// selector matches everything. An immutable value; thread-safe.
#ifndef KILN_KUBE_LABEL_SELECTOR_H_
#define KILN_KUBE_LABEL_SELECTOR_H_

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"

namespace kiln::kube {

class LabelSelector {
 public:
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist };
  struct Requirement {
    std::string key;
    Op op;
    std::set<std::string> values;  // One for (not) equals, none for (does not) exist.
  };

  // Matches everything.
  LabelSelector() = default;
  // InvalidArgument naming the offending requirement for malformed text.
  static StatusOr<LabelSelector> Parse(const std::string& text);

  // `labels` is metadata.labels (an object of strings; null or absent: no labels).
  bool Matches(const nlohmann::json& labels) const;
  // Matches the labels of `object` (metadata.labels).
  bool MatchesObject(const nlohmann::json& object) const;
  bool empty() const { return requirements_.empty(); }
  const std::vector<Requirement>& requirements() const { return requirements_; }

 private:
  std::vector<Requirement> requirements_;
};

}  // namespace kiln::kube

#endif  // KILN_KUBE_LABEL_SELECTOR_H_
