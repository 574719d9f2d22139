#include "router/router_metrics.h"

#include <string>

#include <catch2/catch.hpp>

#include "router/window_summary.h"

namespace kiln::router {
namespace {

TEST_CASE("the windowed summary counts the last window's requests per version", "[router]") {
  int64_t now = 1000;
  RouterMetrics metrics([&] { return now; });
  RouterMetrics::Version* v1 = metrics.For("default/chat", "v1");
  RouterMetrics::Version* v2 = metrics.For("default/chat", "v2");
  CHECK(metrics.For("default/chat", "v1") == v1);

  // v1: 100 requests of 10 ms (first byte 2 ms), long ago.
  now = 500;
  for (int i = 0; i < 100; ++i) {
    metrics.BeginRequest(v1);
    metrics.EndRequest(v1, {.status = 200, .seconds = 0.010, .first_byte_seconds = 0.002});
  }
  // Within the window: v1 98 of 20 ms and 2 of 1 s; v2 8 good, 2 failed.
  now = 1000;
  for (int i = 0; i < 100; ++i) {
    metrics.BeginRequest(v1);
    metrics.EndRequest(
        v1,
        {.status = 200, .seconds = i < 98 ? 0.020 : 1.0, .first_byte_seconds = 0.005, .tokens = 3});
  }
  for (int i = 0; i < 10; ++i) {
    metrics.BeginRequest(v2);
    metrics.EndRequest(
        v2, {.status = i < 8 ? 200 : 502, .error = i < 8 ? nullptr : "connect", .seconds = 0.030});
  }
  // A client that left is not the version's failure and is not counted.
  metrics.BeginRequest(v2);
  metrics.EndRequest(v2, {.client_cancelled = true, .seconds = 5});

  nlohmann::json s = metrics.Summary(60);
  CHECK(s["windowSeconds"] == 60);
  REQUIRE(s["versions"].size() == 2);
  const nlohmann::json& a = s["versions"][0];
  CHECK(a["version"] == "v1");
  CHECK(a["requests"] == 100);
  CHECK(a["errors"] == 0);
  CHECK(a["tokens"] == 300);
  CHECK(a["latencyP50"].get<double>() == Approx(0.020).epsilon(0.13));
  CHECK(a["latencyP99"].get<double>() == Approx(1.0).epsilon(0.13));
  CHECK(a["timeToFirstTokenP50"].get<double>() == Approx(0.005).epsilon(0.13));
  const nlohmann::json& b = s["versions"][1];
  CHECK(b["version"] == "v2");
  CHECK(b["requests"] == 10);
  CHECK(b["errors"] == 2);
  CHECK(b["errorRate"].get<double>() == Approx(0.2));
  CHECK(b["timeToFirstToken"].get<double>() == 0);  // None came.

  // The old requests are in a window that reaches back to them.
  CHECK(metrics.Summary(550)["versions"][0]["requests"] == 200);
  // Later, the window has moved past everything.
  now = 2000;
  CHECK(metrics.Summary(60)["versions"][0]["requests"] == 0);
}

TEST_CASE("the summary carries its counts and buckets and reads back as it was served",
          "[router][summary]") {
  int64_t now = 1000;
  RouterMetrics metrics([&] { return now; });
  RouterMetrics::Version* v1 = metrics.For("default/chat", "v1");
  RouterMetrics::Version* v2 = metrics.For("default/chat", "v2");
  metrics.For("default/idle", "v1");  // No requests: listed with zeros.
  for (int i = 0; i < 50; ++i) {
    metrics.EndRequest(v1, {.status = 200,
                            .seconds = 0.001 * (i + 1),
                            .first_byte_seconds = 0.0005 * (i + 1),
                            .tokens = 2});
  }
  metrics.EndRequest(v2, {.status = 503, .error = "status_5xx", .seconds = 0.2});
  metrics.EndRequest(v2, {.status = 200, .seconds = 3, .first_byte_seconds = 0.3});

  const nlohmann::json served = nlohmann::json::parse(metrics.Summary(60).dump());
  CHECK(served["buckets"]["schema"] == LatencyBuckets::kSchema);
  auto read = WindowSummary::FromJson(served);
  INFO(read.status().ToString());
  REQUIRE(read.ok());
  CHECK(read->window_seconds == 60);
  REQUIRE(read->versions.size() == 3);
  const VersionSummary& a = read->versions.at({"default/chat", "v1"});
  CHECK(a.requests == 50);
  CHECK(a.tokens == 100);
  CHECK(a.latency.count() == 50);
  CHECK(a.first_token.count() == 50);
  // Each request sits in the bucket of its own duration.
  CHECK(a.latency.at(LatencyBuckets::Of(0.050)) >= 1);
  const VersionSummary& b = read->versions.at({"default/chat", "v2"});
  CHECK(b.errors == 1);
  CHECK(b.latency.at(LatencyBuckets::Of(3)) == 1);
  CHECK(b.first_token.count() == 1);
  CHECK(read->versions.at({"default/idle", "v1"}).requests == 0);
  // Every field served, the derived figures included, is what the counts
  // and buckets give: nothing is lost on the way.
  CHECK(read->ToJson() == served);
  // Older readers' fields are still there.
  for (const char* key :
       {"route", "version", "requests", "errors", "errorRate", "latencyP50", "latencyP99",
        "timeToFirstTokenP50", "timeToFirstToken", "tokens", "requestsPerSecond"}) {
    INFO(key);
    CHECK(served["versions"][0].contains(key));
  }
}

TEST_CASE("mirrored copies are counted in the window apart from the live requests",
          "[router][summary]") {
  int64_t now = 1000;
  RouterMetrics metrics([&] { return now; });
  RouterMetrics::Version* v1 = metrics.For("default/chat", "v1");
  RouterMetrics::Version* v2 = metrics.For("default/chat", "v2");
  // v1 answers 20 live requests of 10 ms; 20 copies go to v2: 15 of 40 ms
  // streaming their first token at 8 ms, 3 answered 503, 2 refused.
  for (int i = 0; i < 20; ++i) {
    metrics.BeginRequest(v1);
    metrics.EndRequest(v1, {.status = 200, .seconds = 0.010, .first_byte_seconds = 0.002});
  }
  for (int i = 0; i < 15; ++i) {
    metrics.Mirrored(v2,
                     {.status = 200, .seconds = 0.040, .first_byte_seconds = 0.008, .tokens = 5});
  }
  for (int i = 0; i < 3; ++i) {
    metrics.Mirrored(v2, {.status = 503, .error = "status_5xx", .seconds = 0.002});
  }
  for (int i = 0; i < 2; ++i) metrics.Mirrored(v2, {.error = "connect", .seconds = 0.001});
  // A copy the router cut short (it was shutting down) is not the version's doing.
  metrics.Mirrored(v2, {.client_cancelled = true, .seconds = 9});
  // v2 has one live request of its own (a tester's x-kiln-version).
  metrics.BeginRequest(v2);
  metrics.EndRequest(v2, {.status = 200, .seconds = 2.0});

  auto read = WindowSummary::FromJson(nlohmann::json::parse(metrics.Summary(60).dump()));
  INFO(read.status().ToString());
  REQUIRE(read.ok());
  const VersionSummary& stable = read->versions.at({"default/chat", "v1"});
  CHECK(stable.requests == 20);
  CHECK(stable.mirrored.requests == 0);  // Nothing was mirrored to v1.
  const VersionSummary& canary = read->versions.at({"default/chat", "v2"});
  // The live figures hold only the live request: no mirror failure is a live error.
  CHECK(canary.requests == 1);
  CHECK(canary.errors == 0);
  CHECK(canary.latency.at(LatencyBuckets::Of(2.0)) == 1);
  CHECK(canary.tokens == 0);
  CHECK(canary.mirrored.requests == 20);
  CHECK(canary.mirrored.errors == 5);
  CHECK(canary.mirrored.ErrorRate() == Approx(0.25));
  CHECK(canary.mirrored.tokens == 75);
  CHECK(canary.mirrored.latency.count() == 20);
  CHECK(canary.mirrored.latency.Quantile(0.5) == LatencyBuckets::Value(LatencyBuckets::Of(0.040)));
  CHECK(canary.mirrored.first_token.count() == 15);
  CHECK(canary.mirrored.first_token.Quantile(0.99) ==
        LatencyBuckets::Value(LatencyBuckets::Of(0.008)));

  const nlohmann::json served = metrics.Summary(60);
  const nlohmann::json& m = served["versions"][1]["mirrored"];
  CHECK(m["requests"] == 20);
  CHECK(m["errorRate"].get<double>() == Approx(0.25));
  CHECK(served["versions"][1]["errorRate"].get<double>() == 0);

  // The mirrored copies leave the window as live requests do.
  now = 1100;
  CHECK(metrics.Summary(60)["versions"][1]["mirrored"]["requests"] == 0);
  CHECK(metrics.Summary(300)["versions"][1]["mirrored"]["requests"] == 20);
}

TEST_CASE("Prometheus metrics carry route, version, code and kind", "[router]") {
  RouterMetrics metrics;
  RouterMetrics::Version* v = metrics.For("default/chat", "v2");
  metrics.BeginRequest(v);
  metrics.EndRequest(v, {.status = 200, .seconds = 0.01, .first_byte_seconds = 0.001, .tokens = 7});
  metrics.BeginRequest(v);
  metrics.EndRequest(v, {.status = 504, .error = "timeout", .seconds = 1});
  metrics.Rejected("", "unknown_model", 404);
  metrics.Mirrored(v, {.status = 200, .seconds = 0.01});
  metrics.Mirrored(v, {.status = 502, .error = "status_5xx", .seconds = 0.01});
  metrics.SetConfig(
      {.routes = {{.name = "default/a"}, {.name = "default/b"}, {.name = "default/c"}},
       .generation = 12});
  const std::string text = metrics.Scrape();
  CHECK_THAT(text,
             Catch::Contains(
                 R"(kiln_router_requests_total{code="200",route="default/chat",version="v2"} 1)"));
  CHECK_THAT(
      text, Catch::Contains(
                R"(kiln_router_errors_total{kind="timeout",route="default/chat",version="v2"} 1)"));
  CHECK_THAT(text, Catch::Contains(
                       R"(kiln_router_errors_total{kind="unknown_model",route="",version=""} 1)"));
  CHECK_THAT(text,
             Catch::Contains(R"(kiln_router_tokens_total{route="default/chat",version="v2"} 7)"));
  CHECK_THAT(text,
             Catch::Contains(R"(kiln_router_in_flight{route="default/chat",version="v2"} 0)"));
  CHECK_THAT(
      text,
      Catch::Contains(
          R"(kiln_router_mirror_requests_total{result="ok",route="default/chat",version="v2"} 1)"));
  CHECK_THAT(
      text,
      Catch::Contains(
          R"(kiln_router_mirror_requests_total{result="status_5xx",route="default/chat",version="v2"} 1)"));
  CHECK_THAT(text, Catch::Contains("kiln_router_config_generation 12"));
  CHECK_THAT(
      text,
      Catch::Contains(
          R"(kiln_router_time_to_first_byte_seconds_count{route="default/chat",version="v2"} 1)"));
}

TEST_CASE("the route weights follow the table in use", "[router]") {
  RouterMetrics metrics;
  auto chat = [](int canary_weight) {
    Route route{.name = "default/chat", .models = {"chat"}};
    route.versions.push_back({.name = "v1", .role = "stable", .weight = 100 - canary_weight});
    if (canary_weight > 0) {
      route.versions.push_back({.name = "v2", .role = "canary", .weight = canary_weight});
    }
    return route;
  };
  metrics.SetConfig({.routes = {chat(25)}, .generation = 1});
  std::string text = metrics.Scrape();
  CHECK_THAT(
      text, Catch::Contains(
                R"(kiln_router_route_weight{role="stable",route="default/chat",version="v1"} 75)"));
  CHECK_THAT(
      text, Catch::Contains(
                R"(kiln_router_route_weight{role="canary",route="default/chat",version="v2"} 25)"));

  // A rollback: the canary leaves the table, and its series with it.
  metrics.SetConfig({.routes = {chat(0)}, .generation = 2});
  text = metrics.Scrape();
  CHECK_THAT(
      text,
      Catch::Contains(
          R"(kiln_router_route_weight{role="stable",route="default/chat",version="v1"} 100)"));
  CHECK_THAT(text, !Catch::Contains(R"(version="v2")"));
  CHECK_THAT(text, Catch::Contains("kiln_router_routes 1"));

  // The route deleted: no weights at all.
  metrics.SetConfig({.generation = 3});
  CHECK_THAT(metrics.Scrape(), !Catch::Contains("kiln_router_route_weight{"));
}

}  // namespace
}  // namespace kiln::router
