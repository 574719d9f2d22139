// The kiln-router binary: its command line, a routes file (loaded, re-read
// on change, a bad rewrite refused while the table in use stays), /readyz,
// /debug endpoints, and the drain on SIGTERM with a stream in flight.
#include <csignal>
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/http_server.h"
#include "base/subprocess.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/raw_http.h"
#include "tests/support/temp_dir.h"

namespace kiln {
namespace {

using kiln::testing::BackgroundProcess;
using kiln::testing::FreePort;
using kiln::testing::RawHttp;
using kiln::testing::RawResponse;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr auto kBound = std::chrono::seconds(20);

template <typename F>
bool WaitFor(F done) {
  const auto deadline = Clock::now() + kBound;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

ProcessResult Run(std::vector<std::string> args) {
  args.insert(args.begin(), KILN_ROUTER_BIN);
  auto r = RunProcess({.argv = args, .timeout = std::chrono::seconds(30)});
  REQUIRE(r.ok());
  return *r;
}

RawResponse Get(int port, const std::string& path) {
  RawHttp h(port, "GET", path);
  if (!h.connected()) return {};
  return h.Finish();
}

void Write(const std::string& path, const std::string& text) {
  // Written aside and renamed in, as a ConfigMap update is: never half a file.
  std::ofstream(path + ".tmp") << text;
  REQUIRE(std::rename((path + ".tmp").c_str(), path.c_str()) == 0);
}

std::string Routes(int generation, int backend_port, int weight) {
  return json{{"generation", generation},
              {"routes",
               {{{"name", "default/chat"},
                 {"models", {"chat"}},
                 {"versions",
                  {{{"name", "v1"},
                    {"role", "stable"},
                    {"weight", weight},
                    {"endpoints", {"127.0.0.1:" + std::to_string(backend_port)}}}}}}}}}
      .dump();
}

TEST_CASE("kiln-router refuses bad flags and bad routes files, naming them",
          "[router][cli][process]") {
  testing::TempDir dir;
  const std::string bad = dir.path() + "/bad.json";
  Write(
      bad,
      R"({"routes": [{"name": "a", "models": ["m"], "versions": [{"name": "v1", "role": "stable", "weight": 120}]}]})");
  // A kubeconfig that loads, for the errors that are not about the file.
  const std::string hub = dir.path() + "/hub.kubeconfig";
  Write(hub, R"(apiVersion: v1
kind: Config
clusters: [{name: hub, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: hub, context: {cluster: hub, user: u}}]
current-context: hub
)");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--listen", "nowhere"}, "--listen"},
      {{"--io-threads", "0"}, "--io-threads"},
      {{"--drain-timeout", "soon"}, "--drain-timeout"},
      {{"--routes", dir.path() + "/missing.json"}, "missing.json"},
      {{"--routes", bad}, "routes[0].versions[0].weight: 120 is not in 0-100"},
      {{"--kubeconfig", dir.path() + "/nokubeconfig"}, "cannot load the cluster configuration"},
      {{"--hub-kubeconfig", dir.path() + "/nohub"}, "--hub-kubeconfig: cannot load"},
      {{"--hub-kubeconfig", bad}, "--hub-kubeconfig: cannot load"},
      {{"--hub-kubeconfig", hub, "--hub-context", "elsewhere"}, "--hub-kubeconfig: cannot load"},
      {{"--hub-context", "hub"}, "--hub-context: needs --hub-kubeconfig"},
      {{"--hub-kubeconfig", hub, "--routes", bad}, "--hub-kubeconfig: routes come from --routes"},
  };
  for (const Case& c : cases) {
    ProcessResult r = Run(c.args);
    INFO(c.args[0] << " " << c.args[1] << ": " << r.stderr_data);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.stderr_data + r.stdout_data, Catch::Contains(c.message));
  }
  ProcessResult help = Run({"--help"});
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.stdout_data,
             Catch::Contains("Usage: kiln-router") && Catch::Contains("--drain-timeout") &&
                 Catch::Contains("--routes FILE") && Catch::Contains("--hub-kubeconfig PATH"));
}

TEST_CASE("kiln-router follows its routes file and drains on SIGTERM", "[router][process]") {
  testing::TempDir dir;
  // A backend whose streams wait for the test.
  std::shared_ptr<HttpResponder> held;
  std::mutex mu;
  const int backend_port = FreePort();
  auto backend = HttpServer::Start(
      {.bind_address = "127.0.0.1:" + std::to_string(backend_port)},
      {HttpRoute::Async("POST", "/v1/completions",
                        [&](const HttpRequest& r, std::shared_ptr<HttpResponder> responder) {
                          if (r.body.find("\"stream\"") != std::string::npos) {
                            responder->StartStream({200, "text/event-stream"});
                            responder->Write("data: {\"text\": \"tok0\"}\n\n");
                            std::lock_guard<std::mutex> lock(mu);
                            held = std::move(responder);
                            return;
                          }
                          responder->Reply({200, "application/json", R"({"ok": true})"});
                        })});
  REQUIRE(backend.ok());

  const std::string routes = dir.path() + "/routes.json";
  Write(routes, Routes(0, backend_port, 100));
  const int port = FreePort();
  BackgroundProcess router({KILN_ROUTER_BIN, "--listen=127.0.0.1:" + std::to_string(port),
                            "--routes=" + routes, "--drain-timeout=20s", "--log-format=text"},
                           dir.path() + "/router.log");
  REQUIRE(WaitFor([&] { return Get(port, "/readyz").status == 200; }));
  CHECK(Get(port, "/healthz").status == 200);
  RawHttp ok(port, "POST", "/v1/completions", R"({"model": "chat"})");
  CHECK(ok.Finish().status == 200);
  // Generation 0 in the file: the load count stands in.
  CHECK(json::parse(Get(port, "/debug/routes").body)["generation"] == 1);

  // A rewrite is followed; a bad rewrite is refused and the table stays.
  Write(routes, Routes(7, backend_port, 0));
  REQUIRE(WaitFor([&] { return json::parse(Get(port, "/debug/routes").body)["generation"] == 7; }));
  RawHttp off(port, "POST", "/v1/completions", R"({"model": "chat"})");
  RawResponse r = off.Finish();
  CHECK(r.status == 503);
  CHECK_THAT(r.body, Catch::Contains("every weight is 0"));
  Write(routes, "{\"routes\": [");
  REQUIRE(
      WaitFor([&] { return router.Output().find("routes file refused") != std::string::npos; }));
  CHECK(json::parse(Get(port, "/debug/routes").body)["generation"] == 7);
  Write(routes, Routes(8, backend_port, 100));
  REQUIRE(WaitFor([&] { return json::parse(Get(port, "/debug/routes").body)["generation"] == 8; }));

  json summary = json::parse(Get(port, "/debug/summary?window=30s").body);
  CHECK(summary["windowSeconds"] == 30);
  CHECK(summary["versions"][0]["requests"] == 1);
  CHECK(json::parse(Get(port, "/debug/summary?window=45").body)["windowSeconds"] == 45);
  CHECK(Get(port, "/debug/summary?window=banana").status == 400);
  CHECK(Get(port, "/debug/summary?window=0").status == 400);
  CHECK_THAT(Get(port, "/metrics").body, Catch::Contains("kiln_router_config_generation 8"));

  // SIGTERM with a stream in flight: /readyz fails, the stream finishes,
  // then the router exits 0.
  RawHttp stream(port, "POST", "/v1/completions", R"({"model": "chat", "stream": true})");
  REQUIRE(stream.ReadUntil("tok0"));
  router.Signal(SIGTERM);
  REQUIRE(WaitFor([&] { return router.Output().find("draining") != std::string::npos; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK_FALSE(router.Poll().has_value());  // Still waiting for the stream.
  {
    std::lock_guard<std::mutex> lock(mu);
    REQUIRE(held);
    held->Write("data: [DONE]\n\n");
    held->Finish();
  }
  RawResponse streamed = stream.Finish();
  CHECK(streamed.status == 200);
  CHECK_THAT(streamed.body, Catch::Contains("data: [DONE]"));
  CHECK(router.Wait() == 0);
  CHECK_THAT(router.Output(), Catch::Contains("drained clean=true"));
}

}  // namespace
}  // namespace kiln
