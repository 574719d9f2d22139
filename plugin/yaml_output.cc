#include "plugin/yaml_output.h"

#include <regex>

#include <yaml-cpp/yaml.h>

namespace kiln::plugin {
namespace {

// Whether a plain scalar `s` would be read back as something other than a
// string (YAML 1.1 and 1.2 core schema: null, booleans, numbers, and 1.1's
// timestamps, which kubectl quotes too).
bool NeedsQuotes(const std::string& s) {
  static const std::regex kOtherType(
      R"(^(~|null|Null|NULL|true|True|TRUE|false|False|FALSE|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|y|Y|n|N|[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|0x[0-9a-fA-F]+|0o[0-7]+|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?)$)");
  return s.empty() || std::regex_match(s, kOtherType);
}

void Emit(YAML::Emitter& e, const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::object:
      e << YAML::BeginMap;
      for (const auto& [k, item] : v.items()) {
        e << YAML::Key;
        if (NeedsQuotes(k)) e << YAML::DoubleQuoted;
        e << k << YAML::Value;
        Emit(e, item);
      }
      e << YAML::EndMap;
      break;
    case nlohmann::json::value_t::array:
      e << YAML::BeginSeq;
      for (const auto& item : v) Emit(e, item);
      e << YAML::EndSeq;
      break;
    case nlohmann::json::value_t::string: {
      const std::string& s = v.get_ref<const std::string&>();
      if (NeedsQuotes(s)) e << YAML::DoubleQuoted;
      e << s;
      break;
    }
    case nlohmann::json::value_t::null:
      e << YAML::Null;
      break;
    default:  // Numbers and booleans in JSON's spelling, which YAML reads alike.
      e << v.dump();
      break;
  }
}

}  // namespace

std::string ToYaml(const nlohmann::json& value) {
  YAML::Emitter e;
  Emit(e, value);
  std::string out = e.c_str();
  if (out.empty() || out.back() != '\n') out += '\n';
  return out;
}

}  // namespace kiln::plugin
