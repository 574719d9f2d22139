// LabelSelector: metav1.LabelSelector as plain data (matchLabels and
// matchExpressions, all of which must hold), matched against a label map. The
// same shape as the API's LabelSelector (api/v1alpha1/common.yaml), so the
// TrainingJob adapter copies it field by field. A plain value; thread-safe to
// share once built.
#ifndef KILN_OPERATOR_PLACEMENT_LABEL_SELECTOR_H_
#define KILN_OPERATOR_PLACEMENT_LABEL_SELECTOR_H_

#include <map>
#include <string>
#include <vector>

namespace kiln::placement {

using Labels = std::map<std::string, std::string, std::less<>>;

struct LabelSelectorRequirement {
  std::string key;
  std::string operator_;  // In, NotIn, Exists or DoesNotExist
  std::vector<std::string> values;

  bool operator==(const LabelSelectorRequirement&) const = default;
};

struct LabelSelector {
  Labels match_labels;
  std::vector<LabelSelectorRequirement> match_expressions;

  bool empty() const { return match_labels.empty() && match_expressions.empty(); }
  // True when every pair and requirement holds; the empty selector matches
  // everything. An unknown operator matches nothing (fail closed: the API
  // server's enum keeps them out, so one here is a bug upstream).
  bool Matches(const Labels& labels) const;
  // "k=v,k2 in (a,b)": for reasons shown to people.
  std::string ToString() const;

  bool operator==(const LabelSelector&) const = default;
};

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_LABEL_SELECTOR_H_
