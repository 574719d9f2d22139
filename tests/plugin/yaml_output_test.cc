#include "plugin/yaml_output.h"

#include <catch2/catch.hpp>

#include "tests/support/yaml_json.h"

namespace kiln::plugin {
namespace {

TEST_CASE("the yaml output (-o yaml) reads back as the same JSON", "[plugin][yaml]") {
  const nlohmann::json object = nlohmann::json::parse(R"({
    "metadata": {"name": "chat", "resourceVersion": "4242", "generation": 7,
                 "creationTimestamp": "2026-12-01T00:00:00Z", "labels": {"on": "yes", "": "x"}},
    "spec": {"replicas": 2, "weight": 0.25, "suspend": false, "note": null, "empty": "",
             "steps": [{"setWeight": 25}, {"pause": {}}], "list": [], "version": "1.10",
             "multi": "line one\nline two", "quote": "say \"hi\": now"}})");
  const std::string yaml = ToYaml(object);
  CHECK(yaml.find("resourceVersion: \"4242\"") != std::string::npos);
  CHECK(yaml.find("creationTimestamp: \"2026-12-01T00:00:00Z\"") != std::string::npos);
  auto docs = testing::YamlDocumentsToJson(yaml);
  REQUIRE(docs.ok());
  REQUIRE(docs->size() == 1);
  CHECK(docs->front() == object);
}

}  // namespace
}  // namespace kiln::plugin
