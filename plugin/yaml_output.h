// ToYaml: a JSON value as YAML, for `-o yaml` — strings that would read back
// as another type ("true", "1", "") quoted, key order kept. Pure; thread-safe.
#ifndef KILN_PLUGIN_YAML_OUTPUT_H_
#define KILN_PLUGIN_YAML_OUTPUT_H_

#include <string>

#include <nlohmann/json.hpp>

namespace kiln::plugin {

std::string ToYaml(const nlohmann::json& value);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_YAML_OUTPUT_H_
