// MemberRoutersMetricsSource over member clusters, each an in-memory API
// server whose kiln-router pods answer only through its pod proxy.
#include "operator/controllers/modeldeployment/member_routers_source.h"

#include <chrono>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "base/context.h"
#include "operator/fleet/members.h"
#include "router/router_metrics.h"
#include "router/window_summary.h"
#include "tests/operator/controllers/modeldeployment/router_replica_fakes.h"
#include "tests/support/fake_api_server.h"
#include "tests/support/test_member.h"

namespace kiln::modeldeployment {
namespace {

using kiln::testing::FakeApiServer;
using kiln::testing::kNow;
using kiln::testing::kRoute;
using kiln::testing::ProxiedRouters;
using kiln::testing::TestMember;
using router::LatencyBuckets;
using router::RouterMetrics;

constexpr int kWindow = 30;

// One member cluster: its API server, its kiln-router pods behind the
// proxy, and its connection.
struct Cluster {
  explicit Cluster(const std::string& name)
      : routers(api, kWindow), member(std::make_shared<TestMember>(name, api)) {}

  FakeApiServer api;
  ProxiedRouters routers;
  std::shared_ptr<TestMember> member;
};

RouterReplicasOptions Options() {
  return {.ns = kiln::testing::kRouterNs,
          .service = kiln::testing::kRouterService,
          .timeout = std::chrono::seconds(2)};
}

// Two members: m1 with one router pod, m2 with two; every request also
// recorded in `all`, one router that saw them all.
struct Fleet {
  Fleet() {
    members.Put("m1", m1.member, 1);
    members.Put("m2", m2.member, 2);
  }
  void Serve(RouterMetrics& router, const std::string& version, double seconds,
             bool failed = false) {
    kiln::testing::Serve(router, version, seconds, failed);
    kiln::testing::Serve(all, version, seconds, failed);
  }

  Cluster m1{"m1"};
  Cluster m2{"m2"};
  fleet::Members members;  // After the clusters: stops their members first.
  RouterMetrics all{[] { return kNow; }};
};

TEST_CASE("the router windows of every member cluster merge into one",
          "[modeldeployment][member-routers]") {
  Fleet f;
  RouterMetrics& a = f.m1.routers.Add("kiln-router-a", 8000);
  RouterMetrics& b = f.m2.routers.Add("kiln-router-b", 8000);
  RouterMetrics& c = f.m2.routers.Add("kiln-router-c", 8000);
  // v1: 30 requests in m1 (2 failed), 70 in m2 (40 + 30; 3 failed, and the
  // only slow ones, 2 s). v2: 10, in m1 alone.
  for (int i = 0; i < 30; ++i) f.Serve(a, "v1", 0.020, /*failed=*/i < 2);
  for (int i = 0; i < 40; ++i) f.Serve(b, "v1", 0.020, /*failed=*/i < 3);
  for (int i = 0; i < 28; ++i) f.Serve(c, "v1", 0.020);
  for (int i = 0; i < 2; ++i) f.Serve(c, "v1", 2.0);
  for (int i = 0; i < 10; ++i) f.Serve(a, "v2", 0.050);

  MemberRoutersMetricsSource source(f.members, {"m2", "m1"}, Options());
  auto window = source.Window(kRoute, kWindow);
  INFO(window.status().ToString());
  REQUIRE(window.ok());
  REQUIRE(window->size() == 2);
  const VersionWindow& v1 = window->at("v1");
  CHECK(v1.requests == 100);
  CHECK(v1.errors == 5);
  CHECK(v1.error_rate == Approx(0.05));
  // p99 of 100 is rank 99, one of m2's two slow ones; p50 a 20 ms one.
  CHECK(v1.latency_p50 == LatencyBuckets::Value(LatencyBuckets::Of(0.020)));
  CHECK(v1.latency_p99 == LatencyBuckets::Value(LatencyBuckets::Of(2.0)));
  CHECK(window->at("v2").requests == 10);

  // Field by field, what one router that saw every request serves.
  const router::WindowSummary one = *router::WindowSummary::FromJson(f.all.Summary(kWindow));
  auto merged = source.Summary(kWindow);
  REQUIRE(merged.ok());
  CHECK(merged->window_seconds == kWindow);
  CHECK(merged->versions.size() == one.versions.size());
  for (const auto& [key, want] : one.versions) {
    INFO(key.second);
    REQUIRE(merged->versions.count(key) == 1);
    const router::VersionSummary& got = merged->versions.at(key);
    CHECK(got.requests == want.requests);
    CHECK(got.errors == want.errors);
    CHECK(got.latency == want.latency);
    CHECK(got.first_token == want.first_token);
  }

  // Every pod asked once per measurement, through its own member's proxy.
  CHECK(f.m1.routers.asked().size() == 2);
  CHECK(f.m2.routers.asked().size() == 4);
}

TEST_CASE("the p99 of merged member windows comes from the merged buckets",
          "[modeldeployment][member-routers]") {
  Fleet f;
  RouterMetrics& a = f.m1.routers.Add("kiln-router-a", 8000);
  RouterMetrics& b = f.m2.routers.Add("kiln-router-b", 8000);
  // m1: 60 requests, 1 slow, so its p99 (rank ceil(59.4) = 60) is the slow
  // one. With m2's 60 fast ones, the p99 of 120 (rank ceil(118.8) = 119) is
  // fast: one cluster's p99 is not the fleet's.
  for (int i = 0; i < 59; ++i) f.Serve(a, "v1", 0.010);
  f.Serve(a, "v1", 3.0);
  for (int i = 0; i < 60; ++i) f.Serve(b, "v1", 0.010);

  MemberRoutersMetricsSource m1_only(f.members, {"m1"}, Options());
  auto alone = m1_only.Window(kRoute, kWindow);
  REQUIRE(alone.ok());
  CHECK(alone->at("v1").latency_p99 == LatencyBuckets::Value(LatencyBuckets::Of(3.0)));

  MemberRoutersMetricsSource both(f.members, {"m1", "m2"}, Options());
  auto merged = both.Window(kRoute, kWindow);
  REQUIRE(merged.ok());
  CHECK(merged->at("v1").requests == 120);
  CHECK(merged->at("v1").latency_p99 == LatencyBuckets::Value(LatencyBuckets::Of(0.010)));

  // A cluster named twice is read once.
  MemberRoutersMetricsSource twice(f.members, {"m1", "m1"}, Options());
  auto once = twice.Window(kRoute, kWindow);
  REQUIRE(once.ok());
  CHECK(once->at("v1").requests == 60);
}

TEST_CASE("a member cluster that is not connected fails the measurement, naming it",
          "[modeldeployment][member-routers]") {
  Fleet f;
  kiln::testing::Serve(f.m1.routers.Add("kiln-router-a", 8000), "v1", 0.01);
  MemberRoutersMetricsSource source(f.members, {"m1", "m3"}, Options());
  auto window = source.Window(kRoute, kWindow);
  REQUIRE_FALSE(window.ok());
  CHECK(window.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(window.status().message(), Catch::Contains("1 of 2"));
  CHECK_THAT(window.status().message(), Catch::Contains("member cluster m3: not connected"));
  CHECK_THAT(window.status().message(), !Catch::Contains("member cluster m1"));
}

TEST_CASE("one member's failing router replica fails the measurement, naming both",
          "[modeldeployment][member-routers]") {
  Fleet f;
  kiln::testing::Serve(f.m1.routers.Add("kiln-router-a", 8000), "v1", 0.01);
  kiln::testing::Serve(f.m2.routers.Add("kiln-router-b", 8000), "v1", 0.01);
  kiln::testing::Serve(f.m2.routers.Add("kiln-router-c", 8000), "v1", 0.01);
  MemberRoutersMetricsSource source(f.members, {"m1", "m2"}, Options());
  REQUIRE(source.Window(kRoute, kWindow).ok());

  f.m2.routers.Fail("kiln-router-c");
  auto window = source.Window(kRoute, kWindow);
  REQUIRE_FALSE(window.ok());
  CHECK(window.status().code() == StatusCode::kUnavailable);
  const std::string& message = window.status().message();
  CHECK_THAT(message, Catch::Contains("1 of 2 member clusters"));
  CHECK_THAT(message, Catch::Contains("member cluster m2: 1 of 2 kiln-router replicas"));
  CHECK_THAT(message, Catch::Contains("kiln-router-c"));
  CHECK_THAT(message, !Catch::Contains("kiln-router-b"));
  CHECK_THAT(message, !Catch::Contains("member cluster m1"));
}

TEST_CASE("a member without a ready router, or no member at all, is no window",
          "[modeldeployment][member-routers]") {
  Fleet f;
  kiln::testing::Serve(f.m1.routers.Add("kiln-router-a", 8000), "v1", 0.01);
  MemberRoutersMetricsSource source(f.members, {"m1", "m2"}, Options());
  auto window = source.Window(kRoute, kWindow);
  REQUIRE_FALSE(window.ok());
  CHECK_THAT(window.status().message(), Catch::Contains("member cluster m2: no ready kiln-router"));

  MemberRoutersMetricsSource none(f.members, {}, Options());
  CHECK(none.Window(kRoute, kWindow).status().code() == StatusCode::kUnavailable);
}

TEST_CASE("the members are read within the caller's Context", "[modeldeployment][member-routers]") {
  Fleet f;
  kiln::testing::Serve(f.m1.routers.Add("kiln-router-a", 8000), "v1", 0.01);
  kiln::testing::Serve(f.m2.routers.Add("kiln-router-b", 8000), "v1", 0.01);
  MemberRoutersMetricsSource source(f.members, {"m1", "m2"}, Options());
  std::stop_source stopping;
  stopping.request_stop();  // The reconcile is being dropped (shutdown, lost leadership).
  ScopedContext caller(Context(stopping.get_token(), std::nullopt));
  auto window = source.Window(kRoute, kWindow);
  REQUIRE_FALSE(window.ok());
  CHECK_THAT(window.status().message(), Catch::Contains("member cluster m1"));
  CHECK_THAT(window.status().message(), Catch::Contains("member cluster m2"));
  CHECK(f.m1.routers.asked().empty());
  CHECK(f.m2.routers.asked().empty());
  CHECK(f.m1.api.requests().empty());
}

}  // namespace
}  // namespace kiln::modeldeployment
