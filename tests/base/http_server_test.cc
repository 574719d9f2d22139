#include "base/http_server.h"

#include <catch2/catch.hpp>

#include "operator/runtime/health_checks.h"
#include "tests/support/http_probe.h"

namespace kiln {
namespace {

using kiln::runtime::HealthChecks;  // The operator's probes, served here as in the manager.
using kiln::testing::FreePort;

kube::HttpResponse Fetch(const std::string& url, const std::string& path,
                         const std::string& method = "GET") {
  auto resp = kiln::testing::HttpFetch(url, path, method);
  REQUIRE(resp.ok());
  return *resp;
}

TEST_CASE("health checks answer like kube-apiserver's", "[runtime][health]") {
  HealthChecks readyz("/readyz");
  bool synced = false;
  readyz.Add("ping", [] { return Status::Ok(); });
  readyz.Add("informers", [&] {
    return synced ? Status::Ok() : Status::Unavailable("caches not synced: pods");
  });
  HttpReply r = readyz.Serve({"/readyz", {}});
  CHECK(r.status == 500);
  CHECK(r.body ==
        "[-]informers failed: caches not synced: pods\n[+]ping ok\nreadyz check failed\n");
  CHECK(readyz.Serve({"/readyz", {{"exclude", "informers"}}}).status == 200);
  CHECK(readyz.Serve({"/readyz/ping", {}}).status == 200);
  CHECK(readyz.Serve({"/readyz/informers", {}}).status == 500);
  CHECK(readyz.Serve({"/readyz/nope", {}}).status == 404);
  synced = true;
  r = readyz.Serve({"/readyz", {}});
  CHECK(r.status == 200);
  CHECK(r.body == "ok");
  CHECK(readyz.Serve({"/readyz", {{"verbose", ""}}}).body ==
        "[+]informers ok\n[+]ping ok\nreadyz check passed\n");
}

TEST_CASE("the HTTP server routes by prefix and refuses other methods", "[runtime][http]") {
  HealthChecks healthz("/healthz");
  healthz.Add("ping", [] { return Status::Ok(); });
  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  auto server = HttpServer::Start(
      address, {{"/healthz", [&](const HttpQuery& q) { return healthz.Serve(q); }},
                {"/metrics", [](const HttpQuery&) {
                   return HttpReply{200, "text/plain; version=0.0.4", "up 1\n"};
                 }}});
  REQUIRE(server.ok());
  const std::string url = (*server)->url();
  CHECK(url == "http://" + address);

  auto ok = Fetch(url, "/healthz");
  CHECK(ok.status == 200);
  CHECK(ok.body == "ok");
  CHECK(Fetch(url, "/healthz/ping").status == 200);
  CHECK(Fetch(url, "/healthz?verbose").body.find("[+]ping ok") != std::string::npos);
  CHECK(Fetch(url, "/healthz?exclude=ping&verbose=1").body.find("[+]ping excluded") !=
        std::string::npos);
  auto metrics = Fetch(url, "/metrics");
  CHECK(metrics.body == "up 1\n");
  CHECK(metrics.headers["content-type"] == "text/plain; version=0.0.4");
  CHECK(Fetch(url, "/metricsx").status == 404);
  CHECK(Fetch(url, "/").status == 404);
  CHECK(Fetch(url, "/healthz", "POST").status == 405);

  // The port is taken while the server runs, free after Stop.
  auto second = HttpServer::Start(address, {});
  CHECK(second.status().code() == StatusCode::kUnavailable);
  (*server)->Stop();
  auto again = HttpServer::Start(address, {});
  CHECK(again.ok());
}

TEST_CASE("bind addresses are checked before listening", "[runtime][http]") {
  CHECK(ParseBindAddress(":8080")->second == 8080);
  CHECK(ParseBindAddress("[::1]:9090")->first == "[::1]");
  CHECK(ParseBindAddress("8080").status().message().find("want host:port") != std::string::npos);
  CHECK(!ParseBindAddress(":0").ok());
  CHECK(!ParseBindAddress(":65536").ok());
  CHECK(!ParseBindAddress(":80a").ok());
  CHECK(ParseBindAddress("::1:80").status().message().find("brackets") != std::string::npos);
}

}  // namespace
}  // namespace kiln
