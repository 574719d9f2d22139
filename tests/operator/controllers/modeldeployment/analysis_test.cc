// The analysis verdicts (measurements and their judgement) and the router
// summary they read.
#include "operator/controllers/modeldeployment/analysis.h"

#include <catch2/catch.hpp>

namespace kiln::modeldeployment {
namespace {

namespace v1 = api::v1alpha1;

v1::AnalysisMetric Router(const std::string& name, const std::string& metric,
                          std::optional<double> max, std::optional<double> min = std::nullopt,
                          bool compare = false) {
  v1::AnalysisMetric m;
  m.name = name;
  m.router = v1::RouterMetric{metric, compare};
  m.max = max;
  m.min = min;
  return m;
}

TrafficWindow TwoVersions() {
  TrafficWindow w;
  w["v1"] = {.requests = 50,
             .errors = 1,
             .error_rate = 0.02,
             .latency_p50 = 0.1,
             .latency_p99 = 0.4,
             .ttft_p99 = 0.05};
  w["v2"] = {.requests = 10,
             .errors = 3,
             .error_rate = 0.3,
             .latency_p50 = 0.1,
             .latency_p99 = 0.9,
             .ttft_p99 = 0.2};
  return w;
}

TEST_CASE("a router metric is measured on the canary, or against stable",
          "[modeldeployment][analysis]") {
  const auto w = TwoVersions();
  auto m = Measure(Router("errors", "errorRate", 0.05), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Failed");
  CHECK(*m.measurement.value == Approx(0.3));
  CHECK(m.why.find("> max 0.05") != std::string::npos);

  m = Measure(Router("p99", "latencyP99", 0.6, std::nullopt, true), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Successful");
  CHECK(*m.measurement.value == Approx(0.5));

  m = Measure(Router("ttft", "timeToFirstToken", std::nullopt, 0.3), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Failed");  // Below min.

  m = Measure(Router("p50", "latencyP50", 1.0), w, "v3", "v1", "t");
  CHECK(m.measurement.phase == "Inconclusive");  // No traffic to v3.
  CHECK_FALSE(m.measurement.value.has_value());

  m = Measure(Router("p50", "latencyP50", 1.0), StatusOr<TrafficWindow>(Status::Unavailable("x")),
              "v2", "v1", "t");
  CHECK(m.measurement.phase == "Inconclusive");

  v1::AnalysisMetric prom;
  prom.name = "prom";
  prom.prometheus = v1::PrometheusMetric{"http://p:9090", "up"};
  prom.max = 1;
  CHECK(Measure(prom, w, "v2", "v1", "t").measurement.phase == "Inconclusive");
}

v1::AnalysisMetric Mirrored(v1::AnalysisMetric m) {
  m.router->traffic = "Mirrored";
  return m;
}

// Before its first setWeight: the canary v2 has no live requests, only the
// copies mirrored to it.
TrafficWindow MirroredOnly() {
  TrafficWindow w = TwoVersions();
  w["v2"] = {.mirrored = {.requests = 20,
                          .errors = 4,
                          .error_rate = 0.2,
                          .latency_p50 = 0.15,
                          .latency_p99 = 0.7,
                          .ttft_p99 = 0.09}};
  return w;
}

TEST_CASE("a Mirrored router metric judges the copies mirrored to the canary",
          "[modeldeployment][analysis]") {
  const auto w = MirroredOnly();
  // Live, the canary has nothing to judge yet.
  auto m = Measure(Router("errors", "errorRate", 0.05), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Inconclusive");

  m = Measure(Mirrored(Router("errors", "errorRate", 0.05)), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Failed");
  CHECK(*m.measurement.value == Approx(0.2));
  CHECK_THAT(m.why, Catch::Contains("errorRate of v2 on mirrored requests = 0.2 > max 0.05"));

  m = Measure(Mirrored(Router("ttft", "timeToFirstToken", 0.1)), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Successful");
  CHECK(*m.measurement.value == Approx(0.09));

  // compareToStable: the canary's mirrored requests against the stable
  // version's live ones (p99 0.7 - 0.4).
  m = Measure(Mirrored(Router("p99", "latencyP99", 0.2, std::nullopt, true)), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Failed");
  CHECK(*m.measurement.value == Approx(0.3));
  CHECK_THAT(m.why, Catch::Contains("latencyP99 of v2 on mirrored requests minus v1"));
  m = Measure(Mirrored(Router("p50", "latencyP50", 0.1, std::nullopt, true)), w, "v2", "v1", "t");
  CHECK(m.measurement.phase == "Successful");
  CHECK(*m.measurement.value == Approx(0.05));

  // The stable version's mirrored figures are never what it is compared on:
  // without live stable requests there is nothing to compare with.
  TrafficWindow no_stable = w;
  no_stable["v1"] = {.mirrored = {.requests = 100, .latency_p99 = 0.1}};
  m = Measure(Mirrored(Router("p99", "latencyP99", 0.2, std::nullopt, true)), no_stable, "v2", "v1",
              "t");
  CHECK(m.measurement.phase == "Inconclusive");
}

TEST_CASE("a Mirrored metric without mirrored requests is inconclusive, whatever the live traffic",
          "[modeldeployment][analysis]") {
  // TwoVersions: v2 has 10 live requests and no mirrored ones.
  auto m = Measure(Mirrored(Router("errors", "errorRate", 0.5)), TwoVersions(), "v2", "v1", "t");
  CHECK(m.measurement.phase == "Inconclusive");
  CHECK_FALSE(m.measurement.value.has_value());
  CHECK_THAT(m.why, Catch::Contains("no mirrored requests to v2"));
  // Nor for a canary the window does not list.
  m = Measure(Mirrored(Router("errors", "errorRate", 0.5)), TwoVersions(), "v3", "v1", "t");
  CHECK(m.measurement.phase == "Inconclusive");
}

TEST_CASE("a failed run's message says a metric judged mirrored requests",
          "[modeldeployment][analysis]") {
  v1::AnalysisSpec spec;
  spec.metrics = std::vector<v1::AnalysisMetric>{
      Mirrored(Router("errors", "errorRate", 0.05)),
      Mirrored(Router("p99", "latencyP99", 0.2, std::nullopt, true))};
  AnalysisVerdict v = Judge({{"errors", 0.2, "Failed", "t1"}}, spec);
  CHECK(v.phase == "Failed");
  CHECK_THAT(v.message, Catch::Contains("errors = 0.2 > max 0.05 (canary's mirrored requests)"));
  v = Judge({{"p99", 0.3, "Failed", "t1"}}, spec);
  CHECK_THAT(v.message, Catch::Contains("(canary's mirrored requests minus stable's live ones)"));
}

TEST_CASE("a run fails past failureLimit and is inconclusive past inconclusiveLimit",
          "[modeldeployment][analysis]") {
  v1::AnalysisSpec spec;
  spec.failure_limit = 1;
  spec.inconclusive_limit = 1;
  spec.metrics = std::vector<v1::AnalysisMetric>{Router("errors", "errorRate", 0.05)};
  std::vector<v1::Measurement> ms = {{"errors", 0.3, "Failed", "t1"}};
  CHECK(Judge(ms, spec).phase == "Running");
  ms.push_back({"errors", 0.01, "Successful", "t2"});
  CHECK(Judge(ms, spec).phase == "Running");
  ms.push_back({"errors", 0.2, "Failed", "t3"});
  const AnalysisVerdict failed = Judge(ms, spec);
  CHECK(failed.phase == "Failed");
  CHECK(failed.message.find("errors = 0.2 > max 0.05") != std::string::npos);

  std::vector<v1::Measurement> none = {{"errors", std::nullopt, "Inconclusive", "t1"}};
  CHECK(Judge(none, spec).phase == "Running");
  none.push_back({"errors", std::nullopt, "Inconclusive", "t2"});
  CHECK(Judge(none, spec).phase == "Inconclusive");
}

TEST_CASE("the router's summary is read for one route", "[modeldeployment][analysis]") {
  const std::string body = R"({"windowSeconds": 30, "versions": [
    {"route": "serving/chat", "version": "v1", "requests": 40, "errors": 2, "errorRate": 0.05,
     "latencyP50": 0.1, "latencyP99": 0.3, "timeToFirstToken": 0.04},
    {"route": "serving/other", "version": "v1", "requests": 9, "errorRate": 1}]})";
  auto w = ParseRouterSummary(body, "serving/chat");
  REQUIRE(w.ok());
  REQUIRE(w->size() == 1);
  CHECK(w->at("v1").requests == 40);
  CHECK(w->at("v1").error_rate == Approx(0.05));
  CHECK(w->at("v1").ttft_p99 == Approx(0.04));
  CHECK_FALSE(ParseRouterSummary("<html>", "serving/chat").ok());
  // A kiln-router older than mirrored counts: no mirrored requests.
  CHECK(w->at("v1").mirrored.requests == 0);
}

TEST_CASE("the router's summary gives each version's mirrored figures apart",
          "[modeldeployment][analysis]") {
  const std::string body = R"({"windowSeconds": 30, "versions": [
    {"route": "serving/chat", "version": "v2", "requests": 3, "errors": 0, "errorRate": 0,
     "latencyP50": 0.1, "latencyP99": 0.3, "timeToFirstToken": 0.04,
     "mirrored": {"requests": 40, "errors": 6, "errorRate": 0.15, "latencyP50": 0.2,
                  "latencyP99": 0.8, "timeToFirstToken": 0.07}}]})";
  auto w = ParseRouterSummary(body, "serving/chat");
  REQUIRE(w.ok());
  const VersionWindow& v2 = w->at("v2");
  CHECK(v2.requests == 3);
  CHECK(v2.error_rate == 0);
  CHECK(v2.latency_p99 == Approx(0.3));
  CHECK(v2.mirrored.requests == 40);
  CHECK(v2.mirrored.errors == 6);
  CHECK(v2.mirrored.error_rate == Approx(0.15));
  CHECK(v2.mirrored.latency_p50 == Approx(0.2));
  CHECK(v2.mirrored.latency_p99 == Approx(0.8));
  CHECK(v2.mirrored.ttft_p99 == Approx(0.07));
}

}  // namespace
}  // namespace kiln::modeldeployment
