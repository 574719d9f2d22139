// The HTTPRoute's backendRefs from the traffic weights: which rules are the
// deployment's, and that everything else in the route stays the user's.
#include "operator/controllers/modeldeployment/gateway_route.h"

#include <catch2/catch.hpp>

namespace kiln::modeldeployment {
namespace {

using nlohmann::json;

json Route(json rules) {
  return {{"apiVersion", "gateway.networking.k8s.io/v1"},
          {"kind", "HTTPRoute"},
          {"metadata", {{"name", "chat-route"}, {"namespace", "serving"}}},
          {"spec",
           {{"parentRefs", json::array({{{"name", "edge"}}})},
            {"hostnames", json::array({"chat.example"})},
            {"rules", std::move(rules)}}}};
}

json Ref(const std::string& name, int weight) {
  return {{"group", ""}, {"kind", "Service"}, {"name", name}, {"port", 8000}, {"weight", weight}};
}

json PathMatch(const std::string& prefix) {
  return json::array({{{"path", {{"type", "PathPrefix"}, {"value", prefix}}}}});
}

TEST_CASE("only the deployment's rules get the weights, redirects and other backends stay",
          "[modeldeployment][gateway]") {
  const json header = {{"type", "RequestHeaderModifier"},
                       {"requestHeaderModifier", {{"set", {{{"name", "x-a"}, {"value", "1"}}}}}}};
  const json redirect = {{"type", "RequestRedirect"},
                         {"requestRedirect", {{"scheme", "https"}, {"statusCode", 301}}}};
  json route = Route(json::array(
      {{{"matches", PathMatch("/v1")},
        {"filters", json::array({header})},
        {"backendRefs", json::array({Ref("chat-v1", 1), Ref("chat-v2", 0)})}},
       {{"matches", PathMatch("/old")}, {"filters", json::array({redirect})}},
       {{"matches", PathMatch("/docs")}, {"backendRefs", json::array({Ref("docs", 1)})}}}));
  const json before = route;
  auto changed = SetBackendWeights(route, {{"v1", 25}, {"v2", 75}}, "chat", 8000);
  REQUIRE(changed.ok());
  CHECK(*changed);
  const json& rules = route["spec"]["rules"];
  CHECK(rules[0]["backendRefs"] == json::array({Ref("chat-v1", 25), Ref("chat-v2", 75)}));
  CHECK(rules[0]["matches"] == before["spec"]["rules"][0]["matches"]);
  CHECK(rules[0]["filters"] == json::array({header}));
  CHECK(rules[1] == before["spec"]["rules"][1]);  // A redirect may have no backends.
  CHECK(rules[2] == before["spec"]["rules"][2]);
  CHECK(route["spec"]["hostnames"] == before["spec"]["hostnames"]);
  CHECK(route["spec"]["parentRefs"] == before["spec"]["parentRefs"]);

  // The same weights again: nothing to write.
  auto again = SetBackendWeights(route, {{"v1", 25}, {"v2", 75}}, "chat", 8000);
  REQUIRE(again.ok());
  CHECK_FALSE(*again);
}

TEST_CASE("a version that lost its weight leaves the route, a kept backendRef keeps its filters",
          "[modeldeployment][gateway]") {
  const json header = {{"type", "RequestHeaderModifier"},
                       {"requestHeaderModifier", {{"add", {{{"name", "x-v"}, {"value", "2"}}}}}}};
  json v2 = Ref("chat-v2", 50);
  v2["filters"] = json::array({header});
  json route = Route(json::array({{{"backendRefs", json::array({Ref("chat-v1", 50), v2})}}}));
  // After a promotion v1's Service is still there but has no weight.
  auto changed = SetBackendWeights(route, {{"v2", 100}}, "chat", 8000, {"chat-v1", "chat-v2"});
  REQUIRE(changed.ok());
  CHECK(*changed);
  json want = Ref("chat-v2", 100);
  want["filters"] = json::array({header});
  CHECK(route["spec"]["rules"][0]["backendRefs"] == json::array({want}));
}

TEST_CASE("a rule left without backends is filled, a route without rules gets one",
          "[modeldeployment][gateway]") {
  json route = Route(json::array({{{"matches", PathMatch("/v1")}}}));
  auto changed = SetBackendWeights(route, {{"v1", 100}}, "chat", 9000);
  REQUIRE(changed.ok());
  json want = Ref("chat-v1", 100);
  want["port"] = 9000;
  CHECK(route["spec"]["rules"][0]["backendRefs"] == json::array({want}));

  json bare = Route(json::array());
  REQUIRE(SetBackendWeights(bare, {{"v1", 100}}, "chat", 9000).ok());
  CHECK(bare["spec"]["rules"].size() == 1);
  CHECK(bare["spec"]["rules"][0]["backendRefs"] == json::array({want}));
}

TEST_CASE("a route with no rule naming the deployment's Services is refused, untouched",
          "[modeldeployment][gateway]") {
  json other_ns = Ref("chat-v1", 1);
  other_ns["namespace"] = "elsewhere";
  json route = Route(
      json::array({{{"backendRefs", json::array({Ref("docs", 1)})}},
                   {{"backendRefs", json::array({other_ns})}},
                   {{"filters", json::array({{{"type", "RequestRedirect"},
                                              {"requestRedirect", {{"scheme", "https"}}}}})}}}));
  const json before = route;
  auto changed = SetBackendWeights(route, {{"v1", 100}}, "chat", 8000);
  REQUIRE_FALSE(changed.ok());
  CHECK(changed.status().code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(changed.status().message(),
             Catch::Contains("HTTPRoute chat-route has no rule for this deployment") &&
                 Catch::Contains("(chat-v1)"));
  CHECK(route == before);
}

}  // namespace
}  // namespace kiln::modeldeployment
