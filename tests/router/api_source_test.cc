#include "router/api_source.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "kube/client.h"
#include "tests/support/fake_api_server.h"
#include "tests/support/http_probe.h"

namespace kiln::router {
namespace {

using kiln::testing::FakeApiServer;
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

TEST_CASE("FQDN EndpointSlices give host-name endpoints", "[router][api_source]") {
  // A slice may name hosts by name (addressType FQDN): a backend outside the
  // cluster, or, in tests/integration/router_api_test.cc, fake backends on
  // 127.0.0.1 (the API server refuses loopback IPs in slices).
  json md = WithSplit(Deployment("ns", "chat", "chat"), 50);
  json http_port = json::array({{{"name", "http"}, {"port", 18001}}});
  json fqdn_v1 = Slice("ns", "chat-v1", "chat", "v1", http_port, {Ready("v1.chat.kiln.test")});
  fqdn_v1["addressType"] = "FQDN";
  json fqdn_v2 =
      Slice("ns", "chat-v2", "chat", "v2", json::array({{{"name", "http"}, {"port", 18002}}}),
            {Ready("backend.example"), Ready("down.example", false)});
  fqdn_v2["addressType"] = "FQDN";

  BuiltRoutes built = BuildRouteConfig({Obj(md)}, {Obj(fqdn_v1), Obj(fqdn_v2)}, 1);

  REQUIRE(built.problems.empty());
  REQUIRE(built.config.routes.size() == 1);
  const Route& r = built.config.routes[0];
  REQUIRE(r.versions.size() == 2);
  CHECK(r.versions[0].endpoints == std::vector<std::string>{"v1.chat.kiln.test:18001"});
  CHECK(r.versions[1].endpoints == std::vector<std::string>{"backend.example:18002"});
  CHECK(Validate(built.config).ok());
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

// A client of `api`, which must outlive it, as if `api` were at `server`.
kube::Client ClientOf(FakeApiServer& api, const std::string& server) {
  return kube::Client(kube::RestConfig{.server = server},
                      kube::ClientOptions{.qps = 0, .max_retries = 0}, api.Transport(),
                      RealClock::Get());
}

// What an ApiSource applies: the last config.
struct Applied {
  ApiSource::ApplyFunc Func() {
    return [this](RouteConfig config) {
      std::lock_guard<std::mutex> lock(mu);
      applied = std::move(config);
    };
  }
  std::optional<RouteConfig> last() {
    std::lock_guard<std::mutex> lock(mu);
    return applied;
  }

  std::mutex mu;
  std::optional<RouteConfig> applied;
};

// The requests `api` answered whose path does not hold `path_part`.
std::vector<std::string> OtherRequests(FakeApiServer& api, const std::string& path_part) {
  std::vector<std::string> other;
  for (const std::string& r : api.requests()) {
    if (r.find(path_part) == std::string::npos) other.push_back(r);
  }
  return other;
}

TEST_CASE(
    "a member's router takes ModelDeployments from the hub and endpoints from its own cluster",
    "[router][api_source]") {
  FakeApiServer hub, member;
  json http_port = json::array({{{"name", "http"}, {"port", 8000}}});
  hub.Put("modeldeployments", WithSplit(Deployment("prod", "chat", "chat-model"), 10));
  // The hub's own serving pods (the hub may be a member too) are not this
  // router's to reach.
  hub.Put("endpointslices",
          Slice("prod", "chat-v1-hub", "chat", "v1", http_port, {Ready("10.1.0.1")}));
  // Out of --namespace.
  hub.Put("modeldeployments", WithSplit(Deployment("dev", "chat", "dev-model"), 50));
  member.Put("endpointslices",
             Slice("prod", "chat-v1", "chat", "v1", http_port, {Ready("10.2.0.1")}));
  member.Put("endpointslices",
             Slice("prod", "chat-v2", "chat", "v2", http_port, {Ready("10.2.0.2")}));
  member.Put("endpointslices",
             Slice("dev", "chat-v1", "chat", "v1", http_port, {Ready("10.2.9.9")}));
  // A ModelDeployment left in the member cluster is not routed: the hub's
  // are the ones the rollout writes weights into.
  member.Put("modeldeployments", WithSplit(Deployment("prod", "stale", "stale-model"), 0));

  Applied applied;
  kube::Client hub_client = ClientOf(hub, "https://hub.example:6443");
  kube::Client member_client = ClientOf(member, "https://member.example:6443");
  ApiSource source(hub_client, member_client, {.ns = "prod"}, applied.Func());
  source.Start();
  REQUIRE(source.WaitForSync(std::chrono::seconds(20)));
  source.Stop();

  std::optional<RouteConfig> config = applied.last();
  REQUIRE(config);
  REQUIRE(config->routes.size() == 1);
  const Route& r = config->routes[0];
  CHECK(r.name == "prod/chat");
  CHECK(r.models == std::vector<std::string>{"chat-model"});
  REQUIRE(r.versions.size() == 2);
  CHECK(r.versions[0].name == "v1");
  CHECK(r.versions[0].weight == 90);
  CHECK(r.versions[0].endpoints == std::vector<std::string>{"10.2.0.1:8000"});
  CHECK(r.versions[1].name == "v2");
  CHECK(r.versions[1].weight == 10);
  CHECK(r.versions[1].endpoints == std::vector<std::string>{"10.2.0.2:8000"});
  CHECK(source.stats().routes == 1);
  CHECK(source.stats().problems.empty());

  // Each cluster was asked for its own kind only, in the namespace given.
  CHECK_FALSE(hub.requests().empty());
  CHECK(OtherRequests(hub, "/namespaces/prod/modeldeployments").empty());
  CHECK_FALSE(member.requests().empty());
  CHECK(OtherRequests(member, "/namespaces/prod/endpointslices").empty());
}

TEST_CASE("an unreachable hub keeps the router unready, and its error names the hub",
          "[router][api_source]") {
  FakeApiServer member;
  member.Put("endpointslices",
             Slice("prod", "chat-v1", "chat", "v1",
                   json::array({{{"name", "http"}, {"port", 8000}}}), {Ready("10.2.0.1")}));
  // Nothing listens there: every list fails to connect.
  const std::string hub_server = "https://127.0.0.1:" + std::to_string(testing::FreePort());
  auto hub_client =
      kube::Client::New(kube::RestConfig{.server = hub_server}, {.qps = 0, .max_retries = 0});
  REQUIRE(hub_client.ok());
  kube::Client member_client = ClientOf(member, "https://member.example:6443");
  Applied applied;
  ApiSource source(**hub_client, member_client, {.ns = "prod"}, applied.Func());
  source.Start();

  CHECK_FALSE(source.WaitForSync(std::chrono::milliseconds(500)));
  // The hub's error, once its list has failed: it comes before the member's
  // (this fake member does not watch, which is an error of its own, and may
  // come first on a slow machine).
  const std::string hub_prefix = "hub cluster " + hub_server + ": ";
  Status error;
  for (int i = 0; i < 200 && error.message().rfind(hub_prefix, 0) != 0; ++i) {
    error = source.last_error();
    if (error.message().rfind(hub_prefix, 0) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  source.Stop();
  CHECK_FALSE(source.synced());
  CHECK_FALSE(applied.last());
  CHECK_THAT(error.message(), Catch::StartsWith(hub_prefix));
}

TEST_CASE("with one client both kinds come from its cluster", "[router][api_source]") {
  FakeApiServer api;
  api.Put("modeldeployments", WithSplit(Deployment("ns", "chat", "chat"), 0));
  api.Put("endpointslices",
          Slice("ns", "chat-v1", "chat", "v1", json::array({{{"name", "http"}, {"port", 8000}}}),
                {Ready("10.0.0.1")}));
  Applied applied;
  kube::Client client = ClientOf(api, "https://cluster.example:6443");
  ApiSource source(client, {}, applied.Func());
  source.Start();
  REQUIRE(source.WaitForSync(std::chrono::seconds(20)));
  source.Stop();

  std::optional<RouteConfig> config = applied.last();
  REQUIRE(config);
  REQUIRE(config->routes.size() == 1);
  REQUIRE_FALSE(config->routes[0].versions.empty());
  CHECK(config->routes[0].versions[0].weight == 100);
  CHECK(config->routes[0].versions[0].endpoints == std::vector<std::string>{"10.0.0.1:8000"});
}

}  // namespace
}  // namespace kiln::router
