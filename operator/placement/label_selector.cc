#include "operator/placement/label_selector.h"

#include <algorithm>

namespace kiln::placement {

namespace {

bool Holds(const LabelSelectorRequirement& r, const Labels& labels) {
  auto it = labels.find(r.key);
  const bool has = it != labels.end();
  auto in_values = [&] {
    return has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
  };
  if (r.operator_ == "In") return in_values();
  if (r.operator_ == "NotIn") return !in_values();
  if (r.operator_ == "Exists") return has;
  if (r.operator_ == "DoesNotExist") return !has;
  return false;
}

}  // namespace

bool LabelSelector::Matches(const Labels& labels) const {
  for (const auto& [key, value] : match_labels) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  for (const auto& r : match_expressions) {
    if (!Holds(r, labels)) return false;
  }
  return true;
}

std::string LabelSelector::ToString() const {
  std::string out;
  auto add = [&out](const std::string& part) {
    if (!out.empty()) out += ",";
    out += part;
  };
  for (const auto& [key, value] : match_labels) add(key + "=" + value);
  for (const auto& r : match_expressions) {
    if (r.operator_ == "Exists") {
      add(r.key);
    } else if (r.operator_ == "DoesNotExist") {
      add("!" + r.key);
    } else {
      std::string values;
      for (const auto& v : r.values) values += (values.empty() ? "" : ",") + v;
      add(r.key + (r.operator_ == "In" ? " in (" : " notin (") + values + ")");
    }
  }
  return out;
}

}  // namespace kiln::placement
