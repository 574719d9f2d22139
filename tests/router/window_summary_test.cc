// The windowed summary's buckets, quantiles, JSON form and merging.
#include "router/window_summary.h"

#include <cmath>

#include <catch2/catch.hpp>

namespace kiln::router {
namespace {

using nlohmann::json;

TEST_CASE("latency buckets are log-spaced and report their geometric middle", "[router][summary]") {
  CHECK(LatencyBuckets::Of(0) == 0);
  CHECK(LatencyBuckets::Of(-1) == 0);
  CHECK(LatencyBuckets::Of(std::nan("")) == 0);
  CHECK(LatencyBuckets::Of(LatencyBuckets::kBase) == 0);
  CHECK(LatencyBuckets::Of(LatencyBuckets::kBase * 1.1) == 1);
  CHECK(LatencyBuckets::Of(1e9) == LatencyBuckets::kCount - 1);
  // Every value lies within 12% of what its bucket reports (sqrt(1.25) =
  // 1.118), from 1 ms to 10 minutes.
  for (double s = 0.001; s < 600; s *= 1.07) {
    const double reported = LatencyBuckets::Value(LatencyBuckets::Of(s));
    INFO(s);
    CHECK(std::abs(reported - s) / s < 0.12);
  }
}

TEST_CASE("a histogram's quantile is the bucket of the value ranked ceil(q times n)",
          "[router][summary]") {
  LatencyHistogram h;
  CHECK(h.Quantile(0.5) == 0);  // Empty.
  const int fast = LatencyBuckets::Of(0.020), slow = LatencyBuckets::Of(1.0);
  h.Add(fast, 98);
  h.Add(slow, 2);
  CHECK(h.count() == 100);
  // Ranks 50 and 98 are fast, rank 99 (ceil(0.99 * 100)) the first slow one.
  CHECK(h.Quantile(0.5) == LatencyBuckets::Value(fast));
  CHECK(h.Quantile(0.98) == LatencyBuckets::Value(fast));
  CHECK(h.Quantile(0.99) == LatencyBuckets::Value(slow));
  CHECK(h.ToJson() ==
        json::parse("[[" + std::to_string(fast) + ",98],[" + std::to_string(slow) + ",2]]"));
  auto back = LatencyHistogram::FromJson(h.ToJson());
  REQUIRE(back.ok());
  CHECK(*back == h);

  CHECK_FALSE(LatencyHistogram::FromJson(json::parse("[[72,1]]")).ok());       // Out of range.
  CHECK_FALSE(LatencyHistogram::FromJson(json::parse("[[3,1],[3,2]]")).ok());  // Twice.
  CHECK_FALSE(LatencyHistogram::FromJson(json::parse("[[3,-1]]")).ok());       // Negative.
  CHECK_FALSE(LatencyHistogram::FromJson(json::parse("[[3,1.5]]")).ok());      // Not a count.
  CHECK_FALSE(LatencyHistogram::FromJson(json::parse(R"({"3":1})")).ok());     // Not pairs.
}

TEST_CASE("summaries of the same window merge by route and version", "[router][summary]") {
  WindowSummary a, b;
  a.window_seconds = b.window_seconds = 30;
  VersionSummary& a1 = a.versions[{"default/chat", "v1"}];
  a1.requests = 10;
  a1.errors = 1;
  a1.tokens = 40;
  a1.latency.Add(LatencyBuckets::Of(0.01), 10);
  a1.first_token.Add(LatencyBuckets::Of(0.002), 10);
  VersionSummary& b1 = b.versions[{"default/chat", "v1"}];
  b1.requests = 30;
  b1.errors = 3;
  b1.latency.Add(LatencyBuckets::Of(0.5), 30);
  VersionSummary& b2 = b.versions[{"default/chat", "v2"}];
  b2.requests = 5;
  b2.latency.Add(LatencyBuckets::Of(0.01), 5);

  REQUIRE(a.Merge(b).ok());
  REQUIRE(a.versions.size() == 2);
  const VersionSummary& v1 = a.versions.at({"default/chat", "v1"});
  CHECK(v1.requests == 40);
  CHECK(v1.errors == 4);
  CHECK(v1.tokens == 40);
  CHECK(v1.ErrorRate() == Approx(0.1));
  // 10 fast, 30 slow: the median (rank 20) is slow, though a's alone was fast.
  CHECK(v1.latency.Quantile(0.5) == LatencyBuckets::Value(LatencyBuckets::Of(0.5)));
  CHECK(v1.first_token.count() == 10);
  CHECK(a.versions.at({"default/chat", "v2"}).requests == 5);

  WindowSummary other;
  other.window_seconds = 60;
  CHECK(a.Merge(other).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("mirrored counts and buckets merge apart from the live ones", "[router][summary]") {
  WindowSummary a, b;
  a.window_seconds = b.window_seconds = 30;
  VersionSummary& a2 = a.versions[{"default/chat", "v2"}];
  a2.mirrored.requests = 10;
  a2.mirrored.errors = 1;
  a2.mirrored.tokens = 7;
  a2.mirrored.latency.Add(LatencyBuckets::Of(0.01), 10);
  a2.mirrored.first_token.Add(LatencyBuckets::Of(0.003), 4);
  VersionSummary& b2 = b.versions[{"default/chat", "v2"}];
  b2.requests = 2;  // Live requests of its own on b.
  b2.latency.Add(LatencyBuckets::Of(0.02), 2);
  b2.mirrored.requests = 30;
  b2.mirrored.errors = 5;
  b2.mirrored.latency.Add(LatencyBuckets::Of(0.8), 30);
  b2.mirrored.first_token.Add(LatencyBuckets::Of(0.3), 30);

  REQUIRE(a.Merge(b).ok());
  const VersionSummary& v2 = a.versions.at({"default/chat", "v2"});
  CHECK(v2.requests == 2);
  CHECK(v2.errors == 0);
  CHECK(v2.latency.count() == 2);
  CHECK(v2.mirrored.requests == 40);
  CHECK(v2.mirrored.errors == 6);
  CHECK(v2.mirrored.tokens == 7);
  CHECK(v2.mirrored.ErrorRate() == Approx(0.15));
  CHECK(v2.mirrored.latency.count() == 40);
  // 10 fast and 30 slow copies: the merged median is slow, though a's alone was fast.
  CHECK(v2.mirrored.latency.Quantile(0.5) == LatencyBuckets::Value(LatencyBuckets::Of(0.8)));
  CHECK(v2.mirrored.first_token.count() == 34);
}

TEST_CASE("a summary's JSON names its bucket layout and reads back", "[router][summary]") {
  WindowSummary s;
  s.window_seconds = 60;
  VersionSummary& v = s.versions[{"default/chat", "v2"}];
  v.requests = 4;
  v.errors = 1;
  v.tokens = 9;
  v.latency.Add(LatencyBuckets::Of(0.03), 3);
  v.latency.Add(LatencyBuckets::Of(2), 1);
  v.first_token.Add(LatencyBuckets::Of(0.004), 3);
  const json j = s.ToJson();
  CHECK(j["buckets"] == json{{"schema", 1}, {"base", 1e-4}, {"ratio", 1.25}, {"count", 72}});
  const json& jv = j["versions"][0];
  CHECK(jv["errorRate"] == 0.25);
  CHECK(jv["latencyP50"] == LatencyBuckets::Value(LatencyBuckets::Of(0.03)));
  CHECK(jv["latencyP99"] == LatencyBuckets::Value(LatencyBuckets::Of(2)));
  CHECK(jv["timeToFirstToken"] == LatencyBuckets::Value(LatencyBuckets::Of(0.004)));
  CHECK(jv["requestsPerSecond"] == Approx(4.0 / 60));

  CHECK(jv["mirrored"]["requests"] == 0);  // None mirrored, still served.

  auto back = WindowSummary::FromJson(j);
  INFO(back.status().ToString());
  REQUIRE(back.ok());
  CHECK(back->ToJson() == j);

  json old = j;  // A kiln-router from before the buckets.
  old.erase("buckets");
  CHECK(WindowSummary::FromJson(old).status().code() == StatusCode::kInvalidArgument);
  json other_layout = j;
  other_layout["buckets"]["schema"] = 2;
  CHECK(WindowSummary::FromJson(other_layout).status().code() == StatusCode::kFailedPrecondition);
  json disagreeing = j;  // Counts that the buckets do not hold.
  disagreeing["versions"][0]["requests"] = 5;
  CHECK_FALSE(WindowSummary::FromJson(disagreeing).ok());
  json twice = j;
  twice["versions"].push_back(j["versions"][0]);
  CHECK_FALSE(WindowSummary::FromJson(twice).ok());
  CHECK_FALSE(WindowSummary::FromJson(json::parse("[1]")).ok());
}

TEST_CASE("mirrored figures are served under each version and read back", "[router][summary]") {
  WindowSummary s;
  s.window_seconds = 20;
  VersionSummary& v = s.versions[{"default/chat", "v2"}];
  v.requests = 1;
  v.latency.Add(LatencyBuckets::Of(0.05), 1);
  v.mirrored.requests = 4;
  v.mirrored.errors = 1;
  v.mirrored.tokens = 12;
  v.mirrored.latency.Add(LatencyBuckets::Of(0.03), 3);
  v.mirrored.latency.Add(LatencyBuckets::Of(2), 1);
  v.mirrored.first_token.Add(LatencyBuckets::Of(0.004), 3);
  const json j = s.ToJson();
  const json& m = j["versions"][0]["mirrored"];
  CHECK(m["requests"] == 4);
  CHECK(m["errors"] == 1);
  CHECK(m["errorRate"] == 0.25);
  CHECK(m["latencyP50"] == LatencyBuckets::Value(LatencyBuckets::Of(0.03)));
  CHECK(m["latencyP99"] == LatencyBuckets::Value(LatencyBuckets::Of(2)));
  CHECK(m["timeToFirstToken"] == LatencyBuckets::Value(LatencyBuckets::Of(0.004)));
  CHECK(m["requestsPerSecond"] == Approx(0.2));
  CHECK(j["versions"][0]["requests"] == 1);  // The live figures stay the live ones.

  auto back = WindowSummary::FromJson(j);
  INFO(back.status().ToString());
  REQUIRE(back.ok());
  CHECK(back->versions.at({"default/chat", "v2"}) == v);
  CHECK(back->ToJson() == j);

  // A kiln-router older than mirrored counts: its summary reads as no mirrored traffic.
  json old = j;
  old["versions"][0].erase("mirrored");
  auto read_old = WindowSummary::FromJson(old);
  INFO(read_old.status().ToString());
  REQUIRE(read_old.ok());
  const VersionSummary& o = read_old->versions.at({"default/chat", "v2"});
  CHECK(o.requests == 1);
  CHECK(o.mirrored == TrafficSummary{});

  json disagreeing = j;  // Mirrored counts the buckets do not hold.
  disagreeing["versions"][0]["mirrored"]["requests"] = 5;
  auto refused = WindowSummary::FromJson(disagreeing);
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(refused.status().message(), Catch::Contains("default/chat v2 mirrored"));
  json not_object = j;
  not_object["versions"][0]["mirrored"] = 4;
  CHECK_FALSE(WindowSummary::FromJson(not_object).ok());
  json bad_buckets = j;
  bad_buckets["versions"][0]["mirrored"]["latencyBuckets"] = json::parse("[[3,1],[3,2]]");
  CHECK_FALSE(WindowSummary::FromJson(bad_buckets).ok());
}

}  // namespace
}  // namespace kiln::router
