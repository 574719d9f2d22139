// The Prometheus API's responses, and HttpPrometheusSource against a stand-in
// Prometheus on 127.0.0.1.
#include "operator/controllers/modeldeployment/prometheus_source.h"

#include <mutex>

#include <catch2/catch.hpp>

#include "base/http_server.h"
#include "tests/support/http_probe.h"

namespace kiln::modeldeployment {
namespace {

TEST_CASE("a Prometheus query's answer is one number or none", "[modeldeployment][prometheus]") {
  auto v =
      ParsePrometheusResponse(R"({"status":"success","data":{"resultType":"vector","result":[)"
                              R"({"metric":{"version":"v2"},"value":[1700000000.1,"0.25"]}]}})");
  REQUIRE(v.ok());
  REQUIRE(v->has_value());
  CHECK(**v == Approx(0.25));
  v = ParsePrometheusResponse(
      R"({"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}})");
  REQUIRE(v.ok());
  CHECK(**v == Approx(3));
  v = ParsePrometheusResponse(R"({"status":"success","data":{"resultType":"vector","result":[]}})");
  REQUIRE(v.ok());
  CHECK_FALSE(v->has_value());  // No data yet: inconclusive.
  v = ParsePrometheusResponse(
      R"({"status":"success","data":{"resultType":"vector","result":[{"value":[1,"NaN"]}]}})");
  REQUIRE(v.ok());
  CHECK_FALSE(v->has_value());  // 0/0 with no traffic.
  auto refused = ParsePrometheusResponse(
      R"({"status":"error","errorType":"bad_data","error":"parse error at char 5"})");
  CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
  CHECK(refused.status().message().find("parse error at char 5") != std::string::npos);
  CHECK_FALSE(
      ParsePrometheusResponse(R"({"status":"success","data":{"resultType":"matrix","result":[]}})")
          .ok());
  CHECK_FALSE(ParsePrometheusResponse("<html>").ok());
}

TEST_CASE("{{version}} in a query names the canary", "[modeldeployment][prometheus]") {
  CHECK(ExpandQuery(R"(sum(rate(x{v="{{version}}"}[1m])) / sum(rate(y{v="{{version}}"}[1m])))",
                    "v2") == R"(sum(rate(x{v="v2"}[1m])) / sum(rate(y{v="v2"}[1m])))");
  CHECK(ExpandQuery("up", "v2") == "up");
}

TEST_CASE("HttpPrometheusSource asks /api/v1/query over HTTP", "[modeldeployment][prometheus]") {
  std::mutex mu;
  std::string asked;
  const int port = testing::FreePort();
  auto server = HttpServer::Start(
      {.bind_address = "127.0.0.1:" + std::to_string(port)},
      {HttpRoute::Get("/api/v1/query", [&](const HttpRequest& r) {
        std::lock_guard<std::mutex> lock(mu);
        auto q = r.query.find("query");
        asked = q == r.query.end() ? "" : q->second;
        return HttpReply{.content_type = "application/json",
                         .body = R"({"status":"success","data":{"resultType":"vector",)"
                                 R"("result":[{"value":[1,"0.125"]}]}})"};
      })});
  REQUIRE(server.ok());
  HttpPrometheusSource source;
  auto v = source.Query("http://127.0.0.1:" + std::to_string(port) + "/", R"(errors{v="v2"} > 0)");
  INFO(v.status().ToString());
  REQUIRE(v.ok());
  REQUIRE(v->has_value());
  CHECK(**v == Approx(0.125));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(asked == R"(errors{v="v2"} > 0)");  // Escaped on the way, decoded by the server.
  }
  auto down = source.Query("http://127.0.0.1:" + std::to_string(testing::FreePort()), "up");
  CHECK_FALSE(down.ok());
  (*server)->Drain(std::chrono::seconds(1));
}

}  // namespace
}  // namespace kiln::modeldeployment
