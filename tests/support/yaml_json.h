// YAML documents as JSON, for tests that read manifests (examples/, crds/).
// Plain scalars become booleans, integers, floats or null where they read as
// such (YAML 1.2 core schema); quoted scalars stay strings.
#ifndef KILN_TESTS_SUPPORT_YAML_JSON_H_
#define KILN_TESTS_SUPPORT_YAML_JSON_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"

namespace kiln::testing {

// Every document in `text` (comments and `---` separators allowed).
StatusOr<std::vector<nlohmann::json>> YamlDocumentsToJson(const std::string& text);

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_YAML_JSON_H_
