#include "kube/label_selector.h"

#include <cctype>

namespace kiln::kube {
namespace {

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// Label keys and values: [prefix/]name of alphanumerics, '-', '_', '.'.
bool ValidToken(const std::string& s, bool allow_slash) {
  if (s.empty()) return false;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-' && c != '_' && c != '.' &&
        !(allow_slash && c == '/')) {
      return false;
    }
  }
  return true;
}

// Splits at commas outside parentheses.
StatusOr<std::vector<std::string>> SplitRequirements(const std::string& text) {
  std::vector<std::string> parts;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '(') ++depth;
    if (c == ')' && --depth < 0) return Status::InvalidArgument("unbalanced ')' in " + text);
    if (c == ',' && depth == 0) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (depth != 0) return Status::InvalidArgument("unbalanced '(' in " + text);
  parts.push_back(cur);
  return parts;
}

StatusOr<LabelSelector::Requirement> ParseRequirement(const std::string& raw) {
  using Op = LabelSelector::Op;
  const std::string r = Trim(raw);
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("label selector requirement \"" + r + "\": " + why);
  };
  if (r.empty()) return bad("empty");
  if (r[0] == '!') {
    std::string key = Trim(r.substr(1));
    if (!ValidToken(key, true)) return bad("invalid key");
    return LabelSelector::Requirement{key, Op::kDoesNotExist, {}};
  }
  if (auto pos = r.find("!="); pos != std::string::npos) {
    std::string key = Trim(r.substr(0, pos)), value = Trim(r.substr(pos + 2));
    if (!ValidToken(key, true)) return bad("invalid key");
    if (!value.empty() && !ValidToken(value, false)) return bad("invalid value");
    return LabelSelector::Requirement{key, Op::kNotEquals, {value}};
  }
  if (auto pos = r.find('='); pos != std::string::npos) {
    size_t skip = r.compare(pos, 2, "==") == 0 ? 2 : 1;
    std::string key = Trim(r.substr(0, pos)), value = Trim(r.substr(pos + skip));
    if (!ValidToken(key, true)) return bad("invalid key");
    if (!value.empty() && !ValidToken(value, false)) return bad("invalid value");
    return LabelSelector::Requirement{key, Op::kEquals, {value}};
  }
  if (auto open = r.find('('); open != std::string::npos) {
    if (r.back() != ')') return bad("a set must end with ')'");
    std::string head = Trim(r.substr(0, open));
    auto space = head.find_last_of(" \t");
    if (space == std::string::npos) return bad("expected \"key in (...)\" or \"key notin (...)\"");
    std::string key = Trim(head.substr(0, space)), word = head.substr(space + 1);
    if (!ValidToken(key, true)) return bad("invalid key");
    if (word != "in" && word != "notin") return bad("unknown operator \"" + word + "\"");
    std::set<std::string> values;
    std::string list = r.substr(open + 1, r.size() - open - 2);
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      std::string v = Trim(list.substr(start, comma == std::string::npos ? comma : comma - start));
      if (!v.empty() && !ValidToken(v, false)) return bad("invalid value \"" + v + "\"");
      if (!v.empty()) values.insert(v);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (values.empty()) return bad("a set needs at least one value");
    return LabelSelector::Requirement{key, word == "in" ? Op::kIn : Op::kNotIn, values};
  }
  if (!ValidToken(r, true)) return bad("invalid key");
  return LabelSelector::Requirement{r, Op::kExists, {}};
}

}  // namespace

StatusOr<LabelSelector> LabelSelector::Parse(const std::string& text) {
  LabelSelector out;
  if (Trim(text).empty()) return out;
  KILN_ASSIGN_OR_RETURN(auto parts, SplitRequirements(text));
  for (const auto& part : parts) {
    KILN_ASSIGN_OR_RETURN(auto req, ParseRequirement(part));
    out.requirements_.push_back(std::move(req));
  }
  return out;
}

bool LabelSelector::Matches(const nlohmann::json& labels) const {
  for (const auto& req : requirements_) {
    const nlohmann::json* value = nullptr;
    if (labels.is_object()) {
      auto it = labels.find(req.key);
      if (it != labels.end() && it->is_string()) value = &*it;
    }
    const bool has = value != nullptr;
    const bool in = has && req.values.count(value->get<std::string>()) > 0;
    switch (req.op) {
      case Op::kEquals:
      case Op::kIn:
        if (!in) return false;
        break;
      case Op::kNotEquals:
      case Op::kNotIn:
        if (in) return false;  // An absent key satisfies != and notin, as on the server.
        break;
      case Op::kExists:
        if (!has) return false;
        break;
      case Op::kDoesNotExist:
        if (has) return false;
        break;
    }
  }
  return true;
}

bool LabelSelector::MatchesObject(const nlohmann::json& object) const {
  static const nlohmann::json kNone;
  auto md = object.find("metadata");
  if (md == object.end() || !md->is_object()) return Matches(kNone);
  auto labels = md->find("labels");
  return Matches(labels == md->end() ? kNone : *labels);
}

}  // namespace kiln::kube
