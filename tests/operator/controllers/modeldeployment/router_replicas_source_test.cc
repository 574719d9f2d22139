// RouterReplicasMetricsSource against stand-in kiln-router replicas (real
// RouterMetrics behind HTTP servers on 127.0.0.1, or behind the in-memory
// API server's pod proxy) found through EndpointSlices in the in-memory API
// server.
#include "operator/controllers/modeldeployment/router_replicas_source.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "base/clock.h"
#include "base/context.h"
#include "base/http_server.h"
#include "router/router_metrics.h"
#include "tests/operator/controllers/modeldeployment/router_replica_fakes.h"
#include "tests/support/fake_api_server.h"
#include "tests/support/http_probe.h"

namespace kiln::modeldeployment {
namespace {

using kiln::testing::Endpoint;
using kiln::testing::FakeApiServer;
using kiln::testing::kNow;
using kiln::testing::kRoute;
using kiln::testing::ProxiedRouters;
using kiln::testing::Slice;
using nlohmann::json;
using router::LatencyBuckets;
using router::RouterMetrics;

constexpr const char* kNs = kiln::testing::kRouterNs;
constexpr const char* kService = kiln::testing::kRouterService;

// One kiln-router replica: its metrics at a fixed second, served at
// GET /debug/summary?window=<N>s as kiln-router serves them.
class Replica {
 public:
  Replica() : metrics_([] { return kNow; }) {}
  ~Replica() { Stop(); }

  void Start() {
    port_ = testing::FreePort();
    auto server = HttpServer::Start(
        {.bind_address = "127.0.0.1:" + std::to_string(port_)},
        {HttpRoute::Get("/debug/summary", [this](const HttpRequest& r) {
          ++asked_;
          if (fail_) return HttpReply{.status = 500, .body = "broken\n"};
          auto it = r.query.find("window");
          int window = 60;
          // "30s", as the operator asks: the number, then the unit.
          if (it != r.query.end() &&
              std::from_chars(it->second.data(), it->second.data() + it->second.size(), window)
                      .ec != std::errc()) {
            return HttpReply{.status = 400, .body = "bad window\n"};
          }
          json summary = metrics_.Summary(window);
          if (old_) {  // A kiln-router from before mirrored copies were counted.
            for (json& v : summary["versions"]) v.erase("mirrored");
          }
          return HttpReply{.content_type = "application/json", .body = summary.dump() + "\n"};
        })});
    REQUIRE(server.ok());
    server_ = std::move(*server);
  }
  void Stop() {
    if (server_) server_->Drain(std::chrono::seconds(1));
    server_.reset();
  }
  // A request to `version` that took `seconds` (first byte at a tenth of it).
  void Serve(const std::string& version, double seconds, bool failed = false) {
    kiln::testing::Serve(metrics_, version, seconds, failed);
  }
  // A copy mirrored to `version` that took `seconds`.
  void Mirror(const std::string& version, double seconds, bool failed = false) {
    kiln::testing::Mirror(metrics_, version, seconds, failed);
  }
  std::string SummaryBody(int window) const { return metrics_.Summary(window).dump(); }
  int port() const { return port_; }
  int asked() const { return asked_; }
  void set_fail(bool fail) { fail_ = fail; }
  void set_old(bool old) { old_ = old; }

 private:
  RouterMetrics metrics_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::atomic<int> asked_{0};
  std::atomic<bool> fail_{false};
  std::atomic<bool> old_{false};
};

struct Harness {
  Harness()
      : client(kube::RestConfig{.server = "https://fake"},
               kube::ClientOptions{.qps = 0, .max_retries = 0}, api.Transport(), RealClock::Get()),
        source(client, {.ns = kNs, .service = kService, .timeout = std::chrono::seconds(2)}) {}

  // Every replica in its own slice: they all listen on 127.0.0.1, so their
  // ports differ, and a slice has one port for all its endpoints.
  void Publish(std::vector<Replica*> replicas) {
    char name = 'a';
    for (Replica* r : replicas) {
      const std::string pod = std::string("kiln-router-") + name++;
      api.Put("endpointslices",
              Slice(pod + "-slice", r->port(), json::array({Endpoint(pod, "127.0.0.1")})));
    }
  }

  FakeApiServer api;
  kube::Client client;
  RouterReplicasMetricsSource source;
};

TEST_CASE(
    "the windows of every ready router replica merge into the one of a router that saw "
    "all requests",
    "[modeldeployment][router-replicas]") {
  Replica a, b, c;
  // One router that saw every request the three did, in the same order.
  RouterMetrics all([] { return kNow; });
  auto serve = [&](Replica& r, const std::string& version, double seconds, bool failed = false) {
    r.Serve(version, seconds, failed);
    kiln::testing::Serve(all, version, seconds, failed);
  };
  // v1: 90 requests spread over the three, 10–40 ms. v2: 60 requests, 20 ms,
  // but c alone served its 3 slow ones (2 s) and its 6 failures.
  for (int i = 0; i < 90; ++i) {
    Replica& r = i % 3 == 0 ? a : i % 3 == 1 ? b : c;
    serve(r, "v1", 0.010 + 0.010 * (i % 4));
  }
  for (int i = 0; i < 51; ++i) serve(i % 2 == 0 ? a : b, "v2", 0.020);
  for (int i = 0; i < 6; ++i) serve(c, "v2", 0.020, /*failed=*/true);
  for (int i = 0; i < 3; ++i) serve(c, "v2", 2.0);
  a.Start();
  b.Start();
  c.Start();

  Harness h;
  h.Publish({&a, &b, &c});
  // A replica that is not ready (starting, or terminating) is not asked.
  Replica not_ready;
  not_ready.Start();
  h.api.Put("endpointslices", Slice("kiln-router-d-slice", not_ready.port(),
                                    json::array({Endpoint("kiln-router-d", "127.0.0.1", false)})));
  // Nor is another Service's.
  Replica other;
  other.Start();
  h.api.Put("endpointslices", Slice("other-slice", other.port(),
                                    json::array({Endpoint("other", "127.0.0.1")}), "other"));

  auto window = h.source.Window(kRoute, 30);
  INFO(window.status().ToString());
  REQUIRE(window.ok());
  CHECK(a.asked() == 1);
  CHECK(b.asked() == 1);
  CHECK(c.asked() == 1);
  CHECK(not_ready.asked() == 0);
  CHECK(other.asked() == 0);

  // What one router that saw everything serves, field by field.
  const json one = all.Summary(30);
  REQUIRE(window->size() == 2);
  for (const json& v : one["versions"]) {
    const VersionWindow& got = window->at(v["version"].get<std::string>());
    INFO(v.dump());
    CHECK(got.requests == v["requests"].get<int64_t>());
    CHECK(got.errors == v["errors"].get<int64_t>());
    CHECK(got.error_rate == v["errorRate"].get<double>());
    CHECK(got.latency_p50 == v["latencyP50"].get<double>());
    CHECK(got.latency_p99 == v["latencyP99"].get<double>());
    CHECK(got.ttft_p99 == v["timeToFirstToken"].get<double>());
  }
  // And from the bucket method itself: v2's 60 requests, 57 of 20 ms, 3 of
  // 2 s. p50 (rank 30) is a fast one, p99 (rank ceil(59.4) = 60) a slow one:
  // the 2 s that a and b, read alone, would never show.
  const VersionWindow& v2 = window->at("v2");
  CHECK(v2.requests == 60);
  CHECK(v2.errors == 6);
  CHECK(v2.error_rate == Approx(0.1));
  CHECK(v2.latency_p50 == LatencyBuckets::Value(LatencyBuckets::Of(0.020)));
  CHECK(v2.latency_p99 == LatencyBuckets::Value(LatencyBuckets::Of(2.0)));
  CHECK(v2.ttft_p99 == LatencyBuckets::Value(LatencyBuckets::Of(0.2)));
  CHECK(window->at("v1").requests == 90);

  // One replica alone gives the very numbers its own summary shows (as the
  // --router-url source reads them).
  Harness single;
  single.Publish({&c});
  auto alone = single.source.Window(kRoute, 30);
  REQUIRE(alone.ok());
  auto own = ParseRouterSummary(c.SummaryBody(30), kRoute);
  REQUIRE(own.ok());
  REQUIRE(alone->size() == own->size());
  for (const auto& [version, want] : *own) {
    const VersionWindow& got = alone->at(version);
    CHECK(got.requests == want.requests);
    CHECK(got.errors == want.errors);
    CHECK(got.error_rate == want.error_rate);
    CHECK(got.latency_p50 == want.latency_p50);
    CHECK(got.latency_p99 == want.latency_p99);
    CHECK(got.ttft_p99 == want.ttft_p99);
  }
}

TEST_CASE("mirrored copies merge across replicas apart from the live requests",
          "[modeldeployment][router-replicas]") {
  Replica a, b;
  RouterMetrics all([] { return kNow; });
  // v1 takes every live request; copies go to v2: 40 of 30 ms on a, 8 of
  // 1.5 s and 12 failures on b.
  for (int i = 0; i < 60; ++i) {
    Replica& r = i % 2 == 0 ? a : b;
    r.Serve("v1", 0.010);
    kiln::testing::Serve(all, "v1", 0.010);
  }
  auto mirror = [&](Replica& r, double seconds, bool failed) {
    r.Mirror("v2", seconds, failed);
    kiln::testing::Mirror(all, "v2", seconds, failed);
  };
  for (int i = 0; i < 40; ++i) mirror(a, 0.030, false);
  for (int i = 0; i < 8; ++i) mirror(b, 1.5, false);
  for (int i = 0; i < 12; ++i) mirror(b, 0.030, true);
  a.Start();
  b.Start();

  Harness h;
  h.Publish({&a, &b});
  auto window = h.source.Window(kRoute, 30);
  INFO(window.status().ToString());
  REQUIRE(window.ok());
  const VersionWindow& v2 = window->at("v2");
  CHECK(v2.requests == 0);  // No live request reached the canary.
  CHECK(v2.errors == 0);
  CHECK(v2.mirrored.requests == 60);
  CHECK(v2.mirrored.errors == 12);
  CHECK(v2.mirrored.error_rate == Approx(0.2));
  CHECK(v2.mirrored.latency_p50 == LatencyBuckets::Value(LatencyBuckets::Of(0.030)));
  // Rank ceil(59.4) = 60 of 60: one of b's slow copies, which a alone never shows.
  CHECK(v2.mirrored.latency_p99 == LatencyBuckets::Value(LatencyBuckets::Of(1.5)));
  CHECK(window->at("v1").requests == 60);
  CHECK(window->at("v1").mirrored.requests == 0);
  // Field by field what one router that saw every copy serves.
  const json summary = all.Summary(30);  // Kept: a range-for over a temporary's part dangles.
  for (const json& v : summary["versions"]) {
    const TrafficFigures got = window->at(v["version"].get<std::string>()).mirrored;
    const json& want = v["mirrored"];
    INFO(v.dump());
    CHECK(got.requests == want["requests"].get<int64_t>());
    CHECK(got.errors == want["errors"].get<int64_t>());
    CHECK(got.error_rate == want["errorRate"].get<double>());
    CHECK(got.latency_p50 == want["latencyP50"].get<double>());
    CHECK(got.latency_p99 == want["latencyP99"].get<double>());
    CHECK(got.ttft_p99 == want["timeToFirstToken"].get<double>());
  }

  // A replica running a kiln-router older than mirrored counts still
  // answers: its share reads as no mirrored copies, its live requests count.
  b.set_old(true);
  auto mixed = h.source.Window(kRoute, 30);
  INFO(mixed.status().ToString());
  REQUIRE(mixed.ok());
  CHECK(mixed->at("v2").mirrored.requests == 40);
  CHECK(mixed->at("v2").mirrored.errors == 0);
  CHECK(mixed->at("v1").requests == 60);
}

TEST_CASE("a router replica that does not answer fails the measurement, naming it",
          "[modeldeployment][router-replicas]") {
  Replica a, b, c;
  for (Replica* r : {&a, &b, &c}) {
    r->Serve("v1", 0.01);
    r->Start();
  }
  Harness h;
  h.Publish({&a, &b, &c});
  REQUIRE(h.source.Window(kRoute, 10).ok());

  b.Stop();  // Still listed as ready: the EndpointSlice has not caught up.
  auto down = h.source.Window(kRoute, 10);
  REQUIRE_FALSE(down.ok());
  CHECK(down.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(down.status().message(), Catch::Contains("1 of 3"));
  CHECK_THAT(down.status().message(),
             Catch::Contains("kiln-router-b (127.0.0.1:" + std::to_string(b.port()) + ")"));
  CHECK_THAT(down.status().message(), !Catch::Contains("kiln-router-a"));

  c.set_fail(true);  // Answers, but not with a summary: as bad.
  down = h.source.Window(kRoute, 10);
  REQUIRE_FALSE(down.ok());
  CHECK_THAT(down.status().message(), Catch::Contains("2 of 3"));
  CHECK_THAT(down.status().message(), Catch::Contains("kiln-router-c"));
  CHECK_THAT(down.status().message(), Catch::Contains("HTTP 500"));

  // b's endpoint turns not ready and c recovers: the two ready ones answer.
  h.api.Put("endpointslices", Slice("kiln-router-b-slice", b.port(),
                                    json::array({Endpoint("kiln-router-b", "127.0.0.1", false)})));
  c.set_fail(false);
  auto back = h.source.Window(kRoute, 10);
  INFO(back.status().ToString());
  REQUIRE(back.ok());
  CHECK(back->at("v1").requests == 2);
}

TEST_CASE("no ready router replica is an error, not an empty window",
          "[modeldeployment][router-replicas]") {
  Harness h;
  auto none = h.source.Window(kRoute, 10);
  CHECK(none.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(none.status().message(), Catch::Contains("kiln-system/kiln-router"));
  h.api.Put("endpointslices", Slice("kiln-router-a-slice", testing::FreePort(),
                                    json::array({Endpoint("kiln-router-a", "127.0.0.1", false)})));
  CHECK(h.source.Window(kRoute, 10).status().code() == StatusCode::kUnavailable);
}

TEST_CASE("a router that serves no buckets cannot be merged",
          "[modeldeployment][router-replicas]") {
  const int port = testing::FreePort();
  auto old = HttpServer::Start(
      {.bind_address = "127.0.0.1:" + std::to_string(port)},
      {HttpRoute::Get("/debug/summary", [](const HttpRequest&) {
        return HttpReply{.content_type = "application/json",
                         .body = R"({"windowSeconds":10,"versions":[{"route":"serving/chat",)"
                                 R"("version":"v1","requests":3,"errors":0,"errorRate":0}]})"};
      })});
  REQUIRE(old.ok());
  Harness h;
  h.api.Put("endpointslices", Slice("kiln-router-a-slice", port,
                                    json::array({Endpoint("kiln-router-a", "127.0.0.1")})));
  auto window = h.source.Window(kRoute, 10);
  REQUIRE_FALSE(window.ok());
  CHECK_THAT(window.status().message(), Catch::Contains("no buckets"));
  (*old)->Drain(std::chrono::seconds(1));
}

TEST_CASE("ready replicas come from the slices' endpoints, one per pod",
          "[modeldeployment][router-replicas]") {
  std::vector<json> slices = {
      // Dual stack: the same pods in an IPv6 slice (listed first) and an IPv4 one.
      Slice("v6", 8000,
            json::array({Endpoint("router-a", "fd00::1"), Endpoint("router-b", "fd00::2")}),
            kService, "IPv6"),
      Slice("v4", 8000,
            json::array({Endpoint("router-b", "10.0.0.2"), Endpoint("router-a", "10.0.0.1"),
                         Endpoint("router-c", "10.0.0.3", false),
                         // No conditions: ready, as the API says.
                         Endpoint("router-d", "10.0.0.4", std::nullopt)})),
      // Only in the IPv6 slice.
      Slice("v6-only", 8000, json::array({Endpoint("router-e", "fd00::5")}), kService, "IPv6"),
      Slice("fqdn", 8000, json::array({Endpoint("router-f", "router.example")}), kService, "FQDN"),
  };
  std::vector<RouterReplica> got = ReadyRouterReplicas(slices, "http");
  REQUIRE(got.size() == 4);
  CHECK(got[0].name == "router-a");
  CHECK(got[0].pod == "router-a");
  CHECK(got[0].address == "10.0.0.1:8000");
  CHECK(got[0].port == 8000);
  CHECK(got[1].name == "router-b");
  CHECK(got[1].address == "10.0.0.2:8000");
  CHECK(got[2].name == "router-d");
  CHECK(got[3].name == "router-e");
  CHECK(got[3].address == "[fd00::5]:8000");

  CHECK(ReadyRouterReplicas(slices, "metrics").empty());  // No such port.
  got = ReadyRouterReplicas(slices, "9090");              // A number is used as is.
  REQUIRE(got.size() == 4);
  CHECK(got[0].address == "10.0.0.1:9090");
  CHECK(got[0].port == 9090);

  // Only a Pod targetRef names a pod; without one the address names the replica.
  json other = Endpoint("router-g", "10.0.0.7");
  other["targetRef"]["kind"] = "Node";
  got = ReadyRouterReplicas(
      {Slice("odd", 8000, json::array({other, {{"addresses", {"10.0.0.8"}}}}))}, "http");
  REQUIRE(got.size() == 2);
  CHECK(got[0].name == "10.0.0.8");
  CHECK(got[0].pod.empty());
  CHECK(got[1].name == "router-g");
  CHECK(got[1].pod.empty());
}

TEST_CASE("the router Service and port flags", "[modeldeployment][router-replicas]") {
  auto o = ParseRouterReplicasOptions("kiln-system/kiln-router", "http", "default");
  REQUIRE(o.ok());
  CHECK(o->ns == "kiln-system");
  CHECK(o->service == "kiln-router");
  CHECK(o->port == "http");
  o = ParseRouterReplicasOptions("kiln-router", "8000", "ops");
  REQUIRE(o.ok());
  CHECK(o->ns == "ops");
  CHECK(o->port == "8000");
  CHECK_FALSE(ParseRouterReplicasOptions("kiln-router", "http", "").ok());
  CHECK_FALSE(ParseRouterReplicasOptions("a/b/c", "http", "default").ok());
  CHECK_FALSE(ParseRouterReplicasOptions("ns/", "http", "default").ok());
  CHECK_FALSE(ParseRouterReplicasOptions("ns/r", "", "default").ok());
  CHECK_FALSE(ParseRouterReplicasOptions("ns/r", "0", "default").ok());
  CHECK_FALSE(ParseRouterReplicasOptions("ns/r", "65536", "default").ok());
  CHECK_FALSE(ParseRouterReplicasOptions("ns/r", "Http", "default").ok());
}

// A client of `api` with the given retries and no rate limit.
std::unique_ptr<kube::Client> ClientOf(FakeApiServer& api, int max_retries = 0) {
  return std::make_unique<kube::Client>(kube::RestConfig{.server = "https://fake"},
                                        kube::ClientOptions{.qps = 0, .max_retries = max_retries},
                                        api.Transport(), RealClock::Get());
}

RouterReplicasOptions ThroughApiServer(std::chrono::milliseconds timeout) {
  return {.ns = kNs, .service = kService, .timeout = timeout, .through_api_server = true};
}

TEST_CASE("through the API server, every ready replica is asked at its pod's proxy path",
          "[modeldeployment][router-replicas]") {
  FakeApiServer api;
  auto client = ClientOf(api);
  ProxiedRouters routers(api, 30);
  RouterMetrics& a = routers.Add("kiln-router-a", 8000);
  RouterMetrics& b = routers.Add("kiln-router-b", 8001);
  for (int i = 0; i < 20; ++i) kiln::testing::Serve(a, "v1", 0.010);
  for (int i = 0; i < 30; ++i) kiln::testing::Serve(b, "v1", 0.010, /*failed=*/i < 3);
  kiln::testing::Serve(b, "v2", 0.5);
  // Not ready: not asked.
  api.Put("endpointslices",
          Slice("kiln-router-c-slice", 8002,
                json::array({Endpoint("kiln-router-c", "192.0.2.99", /*ready=*/false)})));
  RouterReplicasMetricsSource source(*client, ThroughApiServer(std::chrono::seconds(2)));

  auto summary = source.Summary(30);
  INFO(summary.status().ToString());
  REQUIRE(summary.ok());
  CHECK(summary->window_seconds == 30);
  REQUIRE(summary->versions.size() == 2);
  const router::VersionSummary& v1 = summary->versions.at({kRoute, "v1"});
  CHECK(v1.requests == 50);
  CHECK(v1.errors == 3);
  CHECK(v1.latency.count() == 50);
  CHECK(summary->versions.at({kRoute, "v2"}).requests == 1);

  std::vector<std::string> asked = routers.asked();
  std::sort(asked.begin(), asked.end());
  CHECK(asked == std::vector<std::string>{"kiln-system/kiln-router-a:8000/debug/summary",
                                          "kiln-system/kiln-router-b:8001/debug/summary"});
  // The window, which the fake's proxy handler is not shown.
  const std::vector<std::string> requests = api.requests();
  for (const char* pod : {"kiln-router-a:8000", "kiln-router-b:8001"}) {
    CHECK(std::count(requests.begin(), requests.end(),
                     std::string("GET /api/v1/namespaces/kiln-system/pods/") + pod +
                         "/proxy/debug/summary?window=30s") == 1);
  }

  auto window = source.Window(kRoute, 30);
  REQUIRE(window.ok());
  REQUIRE(window->size() == 2);
  CHECK(window->at("v1").requests == 50);
  CHECK(window->at("v1").error_rate == Approx(0.06));
  CHECK(window->at("v2").latency_p99 == LatencyBuckets::Value(LatencyBuckets::Of(0.5)));
}

TEST_CASE("through the API server, a replica that fails or is not a pod fails the measurement",
          "[modeldeployment][router-replicas]") {
  FakeApiServer api;
  auto client = ClientOf(api);
  ProxiedRouters routers(api, 10);
  kiln::testing::Serve(routers.Add("kiln-router-a", 8000), "v1", 0.01);
  kiln::testing::Serve(routers.Add("kiln-router-b", 8000), "v1", 0.01);
  RouterReplicasMetricsSource source(*client, ThroughApiServer(std::chrono::seconds(2)));
  REQUIRE(source.Window(kRoute, 10).ok());

  routers.Fail("kiln-router-b");
  auto down = source.Window(kRoute, 10);
  REQUIRE_FALSE(down.ok());
  CHECK(down.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(down.status().message(), Catch::Contains("1 of 2"));
  CHECK_THAT(down.status().message(), Catch::Contains("kiln-router-b (192.0.2.2:8000)"));
  CHECK_THAT(down.status().message(), Catch::Contains("broken"));
  CHECK_THAT(down.status().message(), !Catch::Contains("kiln-router-a"));

  // An endpoint without a Pod targetRef has no pod to proxy to: named, not asked.
  api.Put("endpointslices",
          Slice("bare-slice", 8000, json::array({{{"addresses", {"192.0.2.50"}}}})));
  const size_t asked_before = routers.asked().size();
  down = source.Window(kRoute, 10);
  REQUIRE_FALSE(down.ok());
  CHECK_THAT(down.status().message(), Catch::Contains("2 of 3"));
  CHECK_THAT(down.status().message(), Catch::Contains("192.0.2.50 (192.0.2.50:8000): not a pod"));
  CHECK(routers.asked().size() == asked_before + 2);  // a and b only.
}

TEST_CASE("through the API server, a proxy that keeps refusing is given up on in time",
          "[modeldeployment][router-replicas]") {
  FakeApiServer api;
  // A client that would retry five times, at least a second apart.
  auto client = ClientOf(api, /*max_retries=*/5);
  ProxiedRouters routers(api, 10);
  routers.Add("kiln-router-a", 8000);
  api.SetProxy([](const std::string&, const std::string&, const std::string&, const std::string&) {
    return kube::HttpResponse{503, {{"retry-after", "1"}}, "no endpoints available"};
  });
  auto timed = [](RouterReplicasMetricsSource& source) {
    const auto start = std::chrono::steady_clock::now();
    StatusOr<TrafficWindow> window = source.Window(kRoute, 10);
    return std::make_pair(window.status(), std::chrono::steady_clock::now() - start);
  };

  SECTION("within the source's timeout") {
    RouterReplicasMetricsSource source(*client, ThroughApiServer(std::chrono::milliseconds(200)));
    auto [status, took] = timed(source);
    CHECK_FALSE(status.ok());
    CHECK_THAT(status.message(), Catch::Contains("kiln-router-a"));
    CHECK(took < std::chrono::milliseconds(900));
  }
  SECTION("within the caller's Context") {
    RouterReplicasMetricsSource source(*client, ThroughApiServer(std::chrono::seconds(30)));
    ScopedContext caller(Context().WithTimeout(std::chrono::milliseconds(200)));
    auto [status, took] = timed(source);
    CHECK_FALSE(status.ok());
    CHECK_THAT(status.message(), Catch::Contains("kiln-router-a"));
    CHECK(took < std::chrono::milliseconds(900));
  }
}

}  // namespace
}  // namespace kiln::modeldeployment
