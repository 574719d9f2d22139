#include "router/api_source.h"

#include <memory>
#include <string>
#include <vector>

#include <catch2/catch_test_macros.hpp>
#include <nlohmann/json.hpp>

namespace kiln::router {
namespace {

using nlohmann::json;

kube::Object Obj(json j) { return std::make_shared<const json>(std::move(j)); }

json Deployment(const std::string& ns, const std::string& name, const std::string& model) {
  return {{"apiVersion", "kiln.dev/v1alpha1"},
          {"kind", "ModelDeployment"},
          {"metadata", {{"namespace", ns}, {"name", name}}},
          {"spec",
           {{"model", {{"name", model}, {"version", "v2"}, {"uri", "file:///m/v2"}}},
            {"image", "kiln-worker"}}}};
}

json WithSplit(json md, int canary_weight) {
  md["status"] = {{"stableVersion", "v1"},
                  {"canaryVersion", "v2"},
                  {"traffic",
                   {{{"version", "v1"}, {"weight", 100 - canary_weight}},
                    {{"version", "v2"}, {"weight", canary_weight}}}}};
  return md;
}

json Slice(const std::string& ns, const std::string& name, const std::string& deployment,
           const std::string& version, json ports, json endpoints) {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"namespace", ns},
            {"name", name},
            {"labels",
             {{"kiln.dev/model-deployment", deployment}, {"kiln.dev/model-version", version}}}}},
          {"addressType", "IPv4"},
          {"ports", std::move(ports)},
          {"endpoints", std::move(endpoints)}};
}

json Ready(const std::string& ip, bool ready = true) {
  return {{"addresses", {ip}}, {"conditions", {{"ready", ready}}}};
}

TEST_CASE("a ModelDeployment's status weights and its versions' ready endpoints make its route",
          "[router][api_source]") {
  json md = WithSplit(Deployment("prod", "chat", "chat-model"), 10);
  md["spec"]["traffic"] = {
      {"provider", "Router"},
      {"router",
       {{"host", "chat.example"}, {"stickyHeader", "x-session-id"}, {"mirrorPercent", 5}}}};
  json http_port = json::array({{{"name", "http"}, {"port", 8000}}, {{"name", "m"}, {"port", 9}}});
  std::vector<kube::Object> slices = {
      Obj(Slice("prod", "chat-v1-a", "chat", "v1", http_port,
                {Ready("10.0.0.2"),
                 Ready("10.0.0.1"),
                 Ready("10.0.0.9", false),
                 {{"addresses", {"10.0.0.3"}}}})),  // No conditions: ready.
      Obj(Slice("prod", "chat-v1-b", "chat", "v1", http_port, {Ready("10.0.0.1")})),
      Obj(Slice("prod", "chat-v2", "chat", "v2", {{{"port", 8001}}}, {Ready("fd00::5")})),
      // Same deployment name in another namespace: not this route's.
      Obj(Slice("dev", "chat-v1", "chat", "v1", http_port, {Ready("10.9.9.9")})),
  };

  BuiltRoutes built = BuildRouteConfig({Obj(md)}, slices, 7);

  REQUIRE(built.problems.empty());
  REQUIRE(built.config.generation == 7);
  REQUIRE(built.config.routes.size() == 1);
  const Route& r = built.config.routes[0];
  CHECK(r.name == "prod/chat");
  CHECK(r.models == std::vector<std::string>{"chat-model"});
  CHECK(r.host == "chat.example");
  CHECK(r.sticky_header == "x-session-id");
  CHECK(r.mirror_percent == 5);
  CHECK(r.mirror_version == "v2");
  REQUIRE(r.versions.size() == 2);
  CHECK(r.versions[0].name == "v1");
  CHECK(r.versions[0].role == "stable");
  CHECK(r.versions[0].weight == 90);
  CHECK(r.versions[0].endpoints ==
        std::vector<std::string>{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"});
  CHECK(r.versions[1].name == "v2");
  CHECK(r.versions[1].role == "canary");
  CHECK(r.versions[1].weight == 10);
  CHECK(r.versions[1].endpoints == std::vector<std::string>{"[fd00::5]:8001"});
}

TEST_CASE("a rollback is one status write: the next build sends everything to stable",
          "[router][api_source]") {
  json md = WithSplit(Deployment("ns", "chat", "chat"), 50);
  BuiltRoutes before = BuildRouteConfig({Obj(md)}, {}, 1);
  REQUIRE(before.config.routes.at(0).versions.at(1).weight == 50);

  md["status"]["traffic"] = {{{"version", "v1"}, {"weight", 100}}};
  md["status"].erase("canaryVersion");
  md["status"]["previousVersion"] = "v2";
  BuiltRoutes after = BuildRouteConfig({Obj(md)}, {}, 2);
  REQUIRE(after.problems.empty());
  const Route& r = after.config.routes.at(0);
  REQUIRE(r.versions.size() == 2);
  CHECK(r.versions[0].weight == 100);
  CHECK(r.versions[1].role == "previous");
  CHECK(r.versions[1].weight == 0);  // Warm for x-kiln-version, no share.
}

TEST_CASE("a deployment with no status yet has a route with no versions, without mirroring",
          "[router][api_source]") {
  json md = Deployment("ns", "new", "new-model");
  md["spec"]["traffic"] = {{"router", {{"mirrorPercent", 20}}}};
  BuiltRoutes built = BuildRouteConfig({Obj(md)}, {}, 1);
  REQUIRE(built.problems.empty());
  REQUIRE(built.config.routes.size() == 1);
  CHECK(built.config.routes[0].versions.empty());
  CHECK(built.config.routes[0].mirror_percent == 0);
}

TEST_CASE("GatewayAPI deployments are not the router's", "[router][api_source]") {
  json md = WithSplit(Deployment("ns", "gw", "gw"), 0);
  md["spec"]["traffic"] = {{"provider", "GatewayAPI"}, {"gatewayAPI", {{"httpRoute", "r"}}}};
  BuiltRoutes built = BuildRouteConfig({Obj(md)}, {}, 1);
  CHECK(built.config.routes.empty());
  CHECK(built.problems.empty());
}

TEST_CASE("a bad deployment is left out with its reason and the others are kept",
          "[router][api_source]") {
  json good = WithSplit(Deployment("ns", "a", "shared-name"), 10);
  json same_model = WithSplit(Deployment("ns", "b", "shared-name"), 10);
  json bad_sum = WithSplit(Deployment("ns", "c", "c"), 10);
  bad_sum["status"]["traffic"][0]["weight"] = 80;  // 80 + 10.
  json stray = WithSplit(Deployment("ns", "d", "d"), 10);
  stray["status"]["traffic"].push_back({{"version", "v9"}, {"weight", 0}});
  stray["status"]["traffic"][0]["weight"] = 80;
  stray["status"]["traffic"][2]["weight"] = 10;
  json undecodable = Deployment("ns", "e", "e");
  undecodable["spec"]["model"].erase("uri");

  BuiltRoutes built = BuildRouteConfig(
      {Obj(same_model), Obj(bad_sum), Obj(good), Obj(stray), Obj(undecodable)}, {}, 3);

  std::vector<std::string> names;
  for (const Route& r : built.config.routes) names.push_back(r.name);
  CHECK(names == std::vector<std::string>{"ns/a"});
  REQUIRE(built.problems.size() == 5);
  CHECK(built.problems[0].rfind("ns/b: left out: ", 0) == 0);  // shared-name is ns/a's.
  CHECK(built.problems[1].rfind("ns/c: left out: ", 0) == 0);
  CHECK(built.problems[2].find("ns/d: status.traffic gives 10% to v9") == 0);
  CHECK(built.problems[3].rfind("ns/d: left out: ", 0) == 0);  // 80 + 10 routed.
  CHECK(built.problems[4].find("ns/e: spec.model.uri") == 0);
  CHECK(Validate(built.config).ok());
}

TEST_CASE("slices without the labels or a usable port give no endpoints", "[router][api_source]") {
  json md = WithSplit(Deployment("ns", "chat", "chat"), 0);
  json two_unnamed = json::array({{{"port", 1}}, {{"port", 2}}});
  json one = json::array({{{"port", 8000}}});
  json unlabelled = Slice("ns", "x", "chat", "v1", one, {Ready("10.0.0.1")});
  unlabelled["metadata"]["labels"].erase("kiln.dev/model-version");
  BuiltRoutes built = BuildRouteConfig(
      {Obj(md)},
      {Obj(unlabelled), Obj(Slice("ns", "y", "chat", "v1", two_unnamed, {Ready("10.0.0.2")})),
       Obj(Slice("ns", "z", "chat", "v1", json::array(), {Ready("10.0.0.3")}))},
      1);
  REQUIRE(built.config.routes.size() == 1);
  CHECK(built.config.routes[0].versions.at(0).endpoints.empty());
}

}  // namespace
}  // namespace kiln::router
