#include "router/route_table.h"

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>

#include <catch2/catch.hpp>

namespace kiln::router {
namespace {

RouteConfig Split(int canary_weight, std::vector<std::string> canary_endpoints = {"127.0.0.1:2"}) {
  RouteConfig c;
  c.generation = 1;
  c.routes.push_back({.name = "default/chat",
                      .models = {"chat"},
                      .versions = {{"v1", "stable", 100 - canary_weight, {"127.0.0.1:1"}},
                                   {"v2", "canary", canary_weight, canary_endpoints}},
                      .sticky_header = "x-session",
                      .sticky_cookie = "kiln-session"});
  return c;
}

std::shared_ptr<const RouteTable> Table(RouteConfig c, EndpointRegistry& registry) {
  REQUIRE(Validate(c).ok());
  auto t = RouteTable::Build(std::move(c), registry);
  REQUIRE(t.ok());
  return *t;
}

HttpRequest Req(std::map<std::string, std::string> headers = {},
                std::string path = "/v1/completions") {
  HttpRequest r;
  r.method = "POST";
  r.path = std::move(path);
  r.headers = std::move(headers);
  return r;
}

TEST_CASE("the weighted split holds within statistical bounds over 10,000 requests", "[router]") {
  EndpointRegistry registry;
  std::mt19937_64 rng(42);
  for (int canary : {0, 1, 10, 50, 90, 100}) {
    auto table = Table(Split(canary), registry);
    int to_canary = 0;
    const int n = 10000;
    for (int i = 0; i < n; ++i) {
      Pick p = table->Choose("chat", Req(), rng());
      REQUIRE(p.error == PickError::kNone);
      CHECK(std::string(p.by) == "weight");
      if (p.version->config.name == "v2") ++to_canary;
    }
    // Binomial: within 5 standard deviations (and exact at 0 and 100).
    const double expected = n * canary / 100.0;
    const double sd = std::sqrt(n * (canary / 100.0) * (1 - canary / 100.0));
    INFO("canary weight " << canary << ": " << to_canary << " of " << n);
    CHECK(std::abs(to_canary - expected) <= 5 * sd);
  }
}

TEST_CASE("x-kiln-version picks a version by role or name", "[router]") {
  EndpointRegistry registry;
  auto table = Table(Split(0), registry);
  CHECK(table->Choose("chat", Req({{"x-kiln-version", "canary"}}), 1).version->config.name == "v2");
  CHECK(table->Choose("chat", Req({{"x-kiln-version", "v2"}}), 1).version->config.name == "v2");
  Pick p = table->Choose("chat", Req({{"x-kiln-version", "stable"}}), 1);
  CHECK(p.version->config.name == "v1");
  CHECK(std::string(p.by) == "header");
  p = table->Choose("chat", Req({{"x-kiln-version", "v9"}}), 1);
  CHECK(p.error == PickError::kUnknownVersion);
  CHECK_THAT(p.reason, Catch::Contains("\"v9\" is no version of default/chat") &&
                           Catch::Contains("v1 (stable), v2 (canary)"));
}

TEST_CASE("a sticky key stays on its version, and only the share that moved changes", "[router]") {
  EndpointRegistry registry;
  std::mt19937_64 rng(7);
  auto at10 = Table(Split(10), registry);
  auto at30 = Table(Split(30), registry);
  int on_canary = 0, moved_back = 0, moved_up = 0;
  for (int k = 0; k < 2000; ++k) {
    const std::string key = "conversation-" + std::to_string(k);
    const std::string first =
        at10->Choose("chat", Req({{"x-session", key}}), rng()).version->config.name;
    for (int again = 0; again < 3; ++again) {
      Pick p = at10->Choose("chat", Req({{"x-session", key}}), rng());
      REQUIRE(p.version->config.name == first);
      CHECK(std::string(p.by) == "sticky");
    }
    // The cookie does the same when the header is absent.
    CHECK(at10->Choose("chat", Req({{"cookie", "a=b; kiln-session=" + key}}), rng())
              .version->config.name == first);
    const std::string later =
        at30->Choose("chat", Req({{"x-session", key}}), rng()).version->config.name;
    if (first == "v2") ++on_canary;
    if (first == "v2" && later == "v1") ++moved_back;
    if (first == "v1" && later == "v2") ++moved_up;
  }
  // About 10% of keys start on the canary; growing its share to 30% moves
  // about 20% more onto it and none off it.
  CHECK(on_canary > 100);
  CHECK(on_canary < 300);
  CHECK(moved_back == 0);
  CHECK(moved_up > 250);
  CHECK(moved_up < 550);
}

TEST_CASE("mirroring copies about mirror_percent of the other versions' requests", "[router]") {
  EndpointRegistry registry;
  RouteConfig c = Split(10);
  c.routes[0].mirror_percent = 20;
  c.routes[0].mirror_version = "v2";
  auto table = Table(c, registry);
  std::mt19937_64 rng(3);
  int stable = 0, mirrored = 0;
  for (int i = 0; i < 10000; ++i) {
    Pick p = table->Choose("chat", Req(), rng());
    if (p.version->config.name == "v2") {
      CHECK(p.mirror == nullptr);  // Never a copy to where it already goes.
      continue;
    }
    ++stable;
    if (p.mirror != nullptr) {
      ++mirrored;
      CHECK(p.mirror->config.name == "v2");
      CHECK(p.mirror_endpoint->address() == "127.0.0.1:2");
    }
  }
  const double expected = stable * 0.2, sd = std::sqrt(stable * 0.2 * 0.8);
  CHECK(std::abs(mirrored - expected) <= 5 * sd);
}

TEST_CASE("the endpoint is the least loaded one, ties spread", "[router]") {
  EndpointRegistry registry;
  auto table = Table(Split(100, {"127.0.0.1:11", "127.0.0.1:12", "127.0.0.1:13"}), registry);
  const auto& eps = table->routes()[0].versions[1].endpoints;
  std::mt19937_64 rng(5);
  std::map<std::string, int> picked;
  for (int i = 0; i < 300; ++i) picked[table->Choose("chat", Req(), rng()).endpoint->address()]++;
  CHECK(picked.size() == 3);
  for (const auto& [address, n] : picked) CHECK(n > 50);

  eps[0]->outstanding = 4;
  eps[1]->outstanding = 1;
  eps[2]->outstanding = 3;
  for (int i = 0; i < 50; ++i) {
    CHECK(table->Choose("chat", Req(), rng()).endpoint->address() == "127.0.0.1:12");
  }
  // A backend's reported queue counts when it is the larger figure.
  eps[1]->reported_queue_depth = 9;
  CHECK(table->Choose("chat", Req(), rng()).endpoint->address() == "127.0.0.1:13");
}

TEST_CASE("endpoints carry their load into the next table", "[router]") {
  EndpointRegistry registry;
  auto first = Table(Split(10), registry);
  first->routes()[0].versions[0].endpoints[0]->outstanding = 5;
  auto second = Table(Split(20), registry);
  CHECK(second->routes()[0].versions[0].endpoints[0]->outstanding == 5);
  CHECK(second->routes()[0].versions[0].endpoints[0] ==
        first->routes()[0].versions[0].endpoints[0]);
}

TEST_CASE("requests with nowhere to go get the reason", "[router]") {
  EndpointRegistry registry;
  RouteConfig c = Split(10, {});
  c.routes.push_back({.name = "default/new", .models = {"new"}});
  c.routes.push_back({.name = "default/off",
                      .models = {"off"},
                      .versions = {{"v1", "stable", 0, {"127.0.0.1:1"}}}});
  c.routes.push_back({.name = "default/docs", .host = "docs.example", .path_prefix = "/v1"});
  auto table = Table(c, registry);

  Pick p = table->Choose("nope", Req(), 1);
  CHECK(p.error == PickError::kUnknownModel);
  CHECK(p.reason == "no model deployment serves model \"nope\"");
  p = table->Choose("new", Req(), 1);
  CHECK(p.error == PickError::kNoVersion);
  CHECK(p.reason == "default/new has no serving version yet");
  p = table->Choose("off", Req(), 1);
  CHECK(p.error == PickError::kNoVersion);
  CHECK_THAT(p.reason, Catch::Contains("every weight is 0"));
  p = table->Choose("chat", Req({{"x-kiln-version", "canary"}}), 1);
  CHECK(p.error == PickError::kNoEndpoints);
  CHECK(p.reason == "default/chat version v2 (canary) has no ready endpoint");

  // No model: host and path prefix.
  p = table->Choose("", Req({{"host", "docs.example:8000"}}, "/v1/models"), 1);
  CHECK(p.route != nullptr);
  CHECK(p.route->config.name == "default/docs");
  CHECK(p.error == PickError::kNoVersion);
  p = table->Choose("", Req({{"host", "docs.example"}}, "/v10"), 1);
  CHECK(p.error == PickError::kNoRoute);
  p = table->Choose("", Req({{"host", "other.example"}}, "/v1/models"), 1);
  CHECK(p.error == PickError::kNoRoute);
  CHECK_THAT(p.reason, Catch::Contains("no route matches host \"other.example\""));
}

// The fleet chaos suite saw kiln-router's table give a canary 50% before
// its EndpointSlice had a ready endpoint (the slice lags the Deployment's
// readiness, which the operator acts on): half the requests would have been
// refused. A version with weight and no ready endpoint now passes its share
// to the others; only when none has one does the request fail.
TEST_CASE("a weighted version without a ready endpoint passes its share to the others",
          "[router]") {
  EndpointRegistry registry;
  auto table = Table(Split(50, {}), registry);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    Pick p = table->Choose("chat", Req(), rng());
    REQUIRE(p.error == PickError::kNone);
    CHECK(p.version->config.name == "v1");
  }
  // Sticky keys too, and every one lands.
  for (int i = 0; i < 100; ++i) {
    Pick p = table->Choose("chat", Req({{"x-session", "user-" + std::to_string(i)}}), rng());
    REQUIRE(p.error == PickError::kNone);
    CHECK(std::string(p.by) == "sticky");
    CHECK(p.version->config.name == "v1");
  }
  // Three versions, one without endpoints: the others keep their ratio.
  RouteConfig c;
  c.generation = 1;
  c.routes.push_back({.name = "default/chat",
                      .models = {"chat"},
                      .versions = {{"v1", "stable", 60, {"127.0.0.1:1"}},
                                   {"v2", "canary", 30, {}},
                                   {"v3", "previous", 10, {"127.0.0.1:3"}}}});
  table = Table(c, registry);
  int v1 = 0, v3 = 0;
  const int n = 10000;
  for (int i = 0; i < n; ++i) {
    Pick p = table->Choose("chat", Req(), rng());
    REQUIRE(p.error == PickError::kNone);
    (p.version->config.name == "v1" ? v1 : v3)++;
  }
  // 60:10 of the ready ones: v3 about 1/7, within 5 standard deviations.
  const double sd = std::sqrt(n * (1.0 / 7) * (6.0 / 7));
  INFO("v1 " << v1 << ", v3 " << v3);
  CHECK(std::abs(v3 - n / 7.0) <= 5 * sd);
  // None with weight has an endpoint: the request fails, with the reason.
  c.routes[0].versions = {{"v1", "stable", 100, {}}, {"v2", "canary", 0, {"127.0.0.1:2"}}};
  table = Table(c, registry);
  Pick p = table->Choose("chat", Req(), 1);
  CHECK(p.error == PickError::kNoEndpoints);
  CHECK(p.reason == "default/chat version v1 (stable) has no ready endpoint");
}

TEST_CASE("cookie values are found among others", "[router]") {
  CHECK(CookieValue("a=1; kiln=xyz; b=2", "kiln") == "xyz");
  CHECK(CookieValue("kiln=\"q\"", "kiln") == "q");
  CHECK(CookieValue("kilnx=1; a=2", "kiln").empty());
  CHECK(CookieValue("", "kiln").empty());
}

}  // namespace
}  // namespace kiln::router
