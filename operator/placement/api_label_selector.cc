#include "operator/placement/api_label_selector.h"

#include <string>
#include <vector>

namespace kiln::placement {

LabelSelector LabelSelectorFromApi(const api::v1alpha1::LabelSelector& selector) {
  LabelSelector out;
  if (selector.match_labels) {
    for (const auto& [k, v] : *selector.match_labels) out.match_labels[k] = v;
  }
  if (selector.match_expressions) {
    for (const auto& e : *selector.match_expressions) {
      out.match_expressions.push_back(LabelSelectorRequirement{
          e.key, e.operator_, e.values.value_or(std::vector<std::string>{})});
    }
  }
  return out;
}

}  // namespace kiln::placement
