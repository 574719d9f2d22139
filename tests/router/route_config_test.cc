#include "router/route_config.h"

#include <string>

#include <catch2/catch.hpp>

namespace kiln::router {
namespace {

constexpr const char* kGood = R"({"generation": 7, "routes": [
  {"name": "default/chat", "models": ["chat", "chat-latest"], "stickyHeader": "X-Session",
   "mirrorPercent": 5, "mirrorVersion": "v2",
   "versions": [{"name": "v1", "role": "stable", "weight": 90, "endpoints": ["10.0.0.5:8000"]},
                {"name": "v2", "role": "canary", "weight": 10,
                 "endpoints": ["10.0.0.6:8000", "[fd00::1]:8000", "localhost:9000"]}]},
  {"name": "default/docs", "host": "docs.example", "pathPrefix": "/v1"}]})";

TEST_CASE("a routes file parses, validates and round-trips", "[router]") {
  StatusOr<RouteConfig> c = RouteConfigFromJson(kGood);
  REQUIRE(c.ok());
  CHECK(c->generation == 7);
  REQUIRE(c->routes.size() == 2);
  const Route& chat = c->routes[0];
  CHECK(chat.models == std::vector<std::string>{"chat", "chat-latest"});
  CHECK(chat.sticky_header == "x-session");  // Header names match lower-cased.
  CHECK(chat.mirror_percent == 5);
  REQUIRE(chat.versions.size() == 2);
  CHECK(chat.versions[1].endpoints.size() == 3);
  CHECK(c->routes[1].versions.empty());  // Allowed: answers 503 until it has versions.

  StatusOr<RouteConfig> again = RouteConfigFromJson(RouteConfigToJson(*c));
  REQUIRE(again.ok());
  CHECK(RouteConfigToJson(*again) == RouteConfigToJson(*c));
}

// Each bad input is refused with a message naming the field.
TEST_CASE("bad routes are refused naming the field", "[router]") {
  struct Case {
    std::string json, field;
  };
  const std::string v1 = R"({"name": "v1", "role": "stable", "weight": 100, "endpoints": []})";
  const std::vector<Case> cases = {
      {"{not json", "not valid JSON"},
      {R"({"routes": {}})", "routes: is not a list"},
      {R"({"rutes": []})", "rutes: unknown field"},
      {R"({"routes": [{"models": ["m"]}]})", "routes[0].name: must be set"},
      {R"({"routes": [{"name": "a"}]})", "routes[0]: names no models, host or pathPrefix"},
      {R"({"routes": [{"name": "a", "models": ["m"], "colour": 1}]})", "routes[0].colour: unknown"},
      {R"({"routes": [{"name": "a", "models": "m"}]})", "routes[0].models: has the wrong type"},
      {R"({"routes": [{"name": "a", "pathPrefix": "v1"}]})", "routes[0].pathPrefix"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [{"name": "v1", "role": "stable", "weight": 120}]}]})",
       "routes[0].versions[0].weight: 120 is not in 0-100"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [{"name": "v1", "role": "stable", "weight": 60},
          {"name": "v2", "role": "canary", "weight": 30}]}]})",
       "routes[0].versions: weights sum to 90, not 100"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [{"name": "v1", "role": "boss", "weight": 100}]}]})",
       "routes[0].versions[0].role: \"boss\" is not stable, canary or previous"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [)" + v1 + "," +
           R"({"name": "v2", "role": "stable", "weight": 0}]}]})",
       "routes[0].versions[1].role: a second stable version"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [)" + v1 + "," + v1 + "]}]}",
       "routes[0].versions[1].name: \"v1\" repeated"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [{"name": "canary", "role": "canary", "weight": 100}]}]})",
       "routes[0].versions[0].name: \"canary\" is a role"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [{"name": "v1", "role": "stable", "weight": 100, "endpoints": ["10.0.0.1"]}]}]})",
       "routes[0].versions[0].endpoints[0]: \"10.0.0.1\" is not host:port"},
      {R"({"routes": [{"name": "a", "models": ["m"], "versions": [{"name": "v1", "role": "stable", "weight": 100, "endpoints": [":80"]}]}]})",
       "routes[0].versions[0].endpoints[0]: \":80\" has no host"},
      {R"({"routes": [{"name": "a", "models": ["m"], "mirrorPercent": 10, "versions": [)" + v1 +
           "]}]}",
       "routes[0].mirrorVersion: must be set"},
      {R"({"routes": [{"name": "a", "models": ["m"], "mirrorPercent": 10, "mirrorVersion": "v9", "versions": [)" +
           v1 + "]}]}",
       "routes[0].mirrorVersion: \"v9\" is no version's name"},
      {R"({"routes": [{"name": "a", "models": ["m"], "mirrorPercent": 101, "versions": []}]})",
       "routes[0].mirrorPercent: 101 is not in 0-100"},
      {R"({"routes": [{"name": "a", "models": ["m"]}, {"name": "b", "models": ["m"]}]})",
       "routes[1].models: model \"m\" is already served by a"},
      {R"({"routes": [{"name": "a", "models": ["m"]}, {"name": "a", "models": ["n"]}]})",
       "routes[1].name: \"a\" repeated"},
  };
  for (const Case& c : cases) {
    INFO(c.json);
    StatusOr<RouteConfig> r = RouteConfigFromJson(c.json);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(r.status().message(), Catch::Contains(c.field));
  }
}

TEST_CASE("a route whose weights are all zero is valid", "[router]") {
  RouteConfig c;
  c.routes.push_back(
      {.name = "a",
       .models = {"m"},
       .versions = {{"v1", "stable", 0, {"127.0.0.1:1"}}, {"v2", "canary", 0, {"127.0.0.1:2"}}}});
  CHECK(Validate(c).ok());
}

}  // namespace
}  // namespace kiln::router
