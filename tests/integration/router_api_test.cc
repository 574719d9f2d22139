// kiln-router routing from the API of the shared local control plane: a
// ModelDeployment with traffic.provider Router, its status (stable v1, canary
// v2, weights) written through the status subresource, and EndpointSlices of
// addressType FQDN on the ports of two fake_backend processes on 127.0.0.1.
// The API server refuses loopback IPs in slices, and a name must have two
// labels ("localhost" is refused), so the slices name v1.chat.kiln.test and
// v2.chat.kiln.test (.test never resolves in DNS) and the router runs in a
// mount namespace of its own (unshare, in a user namespace) whose /etc/hosts
// maps them to 127.0.0.1 (and whose nsswitch.conf resolves host names from
// that file only); its network is the machine's, so all traffic stays on
// loopback. The router, on the cluster's kubeconfig, must split requests by
// the weights, follow every weight flip without a failed request, pass the
// canary's share to the stable when the canary's endpoints go (503 naming the
// reason for a request that asks for the canary, and for every request once
// the stable's go too), and 404 when the deployment goes.
//
// Prints, for the weight flips, the time from the status write (sent, and
// answered) to the first request after which every request went to the new
// version (a client sending requests back to back on one kept-alive
// connection); asserts only that the router follows. The hidden test case
// [router-bench] does 20 flips for bench/router_config_latency.sh.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "operator/api/labels.h"
#include "operator/api/v1alpha1/resources.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/local_clusters.h"
#include "tests/support/raw_http.h"
#include "tests/support/temp_dir.h"

namespace kiln::router {
namespace {

using kube::json;
using Clock = std::chrono::steady_clock;

const kube::Resource kEndpointSlices{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice",
                                     true};
constexpr const char* kDeployment = "chat";
constexpr const char* kModel = "chat-model";

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Polls `probe` every 20 ms until it returns true; fails the test after
// `limit`.
void WaitUntil(const std::string& what, const std::function<bool()>& probe,
               std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = Clock::now() + limit;
  while (!probe()) {
    if (Clock::now() > deadline) {
      FAIL("timed out after " << limit.count() << " s waiting for " << what);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string Tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

std::string CompletionRequest() {
  return json{{"model", kModel}, {"prompt", "hello"}, {"max_tokens", 4}}.dump();
}

// The name a version's slice gives its fake backend; the router's /etc/hosts
// maps it to 127.0.0.1.
std::string BackendHost(const std::string& version) { return version + ".chat.kiln.test"; }

// A name no /etc/hosts line holds: the router cannot resolve it (and, with
// "hosts: files" only, asks no DNS server).
constexpr const char* kUnresolvableHost = "gone.chat.kiln.test";

// The version's slice: its fake backend and, for v1, also an endpoint whose
// name does not resolve, which the router must leave out without refusing
// the whole table (a regression test: it did, and never became ready).
json Slice(const std::string& ns, const std::string& version, int port) {
  json endpoints = json::array();
  for (const std::string& host :
       version == "v1" ? std::vector<std::string>{BackendHost(version), kUnresolvableHost}
                       : std::vector<std::string>{BackendHost(version)}) {
    endpoints.push_back({{"addresses", json::array({host})}, {"conditions", {{"ready", true}}}});
  }
  json http = {{"name", "http"}, {"port", port}, {"protocol", "TCP"}};
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"name", std::string(kDeployment) + "-" + version},
            {"namespace", ns},
            {"labels",
             {{api::kModelDeploymentLabel, kDeployment}, {api::kModelVersionLabel, version}}}}},
          {"addressType", "FQDN"},
          {"endpoints", endpoints},
          {"ports", json::array({http})}};
}

// Runs a function when it goes out of scope (also while an exception unwinds).
class OnExit {
 public:
  explicit OnExit(std::function<void()> f) : f_(std::move(f)) {}
  ~OnExit() { f_(); }
  OnExit(const OnExit&) = delete;
  OnExit& operator=(const OnExit&) = delete;

 private:
  std::function<void()> f_;
};

// One answered (or failed) request: when it was sent, who answered.
struct Sample {
  Clock::time_point sent;
  int status = 0;       // 0: no response (connection broken).
  std::string backend;  // x-kiln-backend: the fake backend's --name.
  std::string body;
};

// Sends one request after another on a kept-alive connection from its own
// thread, recording every one, until destroyed. Thread-safe.
class LoadClient {
 public:
  explicit LoadClient(int port) : port_(port), thread_([this] { Run(); }) {}
  ~LoadClient() {
    stop_ = true;
    thread_.join();
  }
  LoadClient(const LoadClient&) = delete;
  LoadClient& operator=(const LoadClient&) = delete;

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return samples_.size();
  }
  std::vector<Sample> Since(size_t index) const {
    std::lock_guard<std::mutex> lock(mu_);
    return {samples_.begin() + static_cast<std::ptrdiff_t>(std::min(index, samples_.size())),
            samples_.end()};
  }

 private:
  void Run() {
    const std::string request =
        testing::RawHttp::Request("POST", "/v1/completions", CompletionRequest());
    auto connection = std::make_unique<testing::RawHttp>(port_);
    while (!stop_) {
      Sample s{.sent = Clock::now()};
      testing::RawResponse r;
      if (connection->Send(request)) r = connection->Next();
      s.status = r.status;
      s.backend = r.headers["x-kiln-backend"];
      if (r.status != 200) s.body = r.body;
      {
        std::lock_guard<std::mutex> lock(mu_);
        samples_.push_back(std::move(s));
      }
      if (r.status == 0) connection = std::make_unique<testing::RawHttp>(port_);
    }
  }

  const int port_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<Sample> samples_;  // Guarded by mu_.
  std::thread thread_;
};

// The whole setup: a namespace on the last cluster of the fixture (kiln-2 of
// the shared control plane; kiln-1 belongs to the Helm test), the
// ModelDeployment CRD, the deployment with status stable v1 / canary v2 at
// 70/30, a slice per version, two fake backends and kiln-router. Going
// away, also when the test (or the setup itself) failed, it prints the
// router's log if a failure is unwinding, kills the processes and deletes
// the namespace: its members do, in reverse order.
class RouterRig {
 public:
  RouterRig() {
    auto lc = testing::LocalClusters::FromEnvironment();
    REQUIRE(lc.ok());
    REQUIRE(!lc->clusters().empty());
    clusters_ = std::make_unique<testing::LocalClusters>(*std::move(lc));
    const testing::LocalCluster& cluster = clusters_->clusters().back();
    auto client = clusters_->Client(cluster);
    REQUIRE(client.ok());
    client_ = std::move(*client);

    const Status applied = clusters_->ApplyCrd(
        cluster, std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_modeldeployments.yaml",
        "modeldeployments.kiln.dev");
    INFO(applied.ToString());
    REQUIRE(applied.ok());

    ns_ = testing::UniqueName("kiln-router");
    REQUIRE(api().Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", ns_}}}}).ok());
    delete_namespace_ = std::make_unique<OnExit>([this] {
      // Best effort: a namespace left behind goes with the fixture's
      // clusters, and a finished test's outcome does not depend on it.
      (void)api().Delete(kube::resources::kNamespaces, "", ns_);
    });

    for (const char* version : {"v1", "v2"}) {
      const int port = testing::FreePort();
      REQUIRE(port > 0);
      backend_ports_[version] = port;
      backends_.push_back(std::make_unique<testing::BackgroundProcess>(
          std::vector<std::string>{KILN_FAKE_BACKEND_BIN, "--listen",
                                   "127.0.0.1:" + std::to_string(port), "--name", version},
          dir_.path() + "/backend-" + version + ".log"));
    }
    for (auto& [version, port] : backend_ports_) {
      WaitUntil("fake_backend " + version + " ready", [port = port] {
        return testing::RawHttp(port, "GET", "/readyz").Finish().status == 200;
      });
    }

    json md = {
        {"apiVersion", "kiln.dev/v1alpha1"},
        {"kind", "ModelDeployment"},
        {"metadata", {{"name", kDeployment}, {"namespace", ns_}}},
        {"spec",
         {{"model", {{"name", kModel}, {"version", "v2"}, {"uri", "file:///models/chat/v2"}}},
          {"image", "ghcr.io/kiln-dev/kiln-worker:0.1.0"},
          {"traffic", {{"provider", "Router"}}}}}};
    auto created = api().Create(api::v1alpha1::kModelDeployments, ns_, md);
    INFO(created.status().ToString());
    REQUIRE(created.ok());
    SetStatus(json{{"phase", "Progressing"},
                   {"stableVersion", "v1"},
                   {"canaryVersion", "v2"},
                   {"canaryWeight", 30},
                   {"traffic", Traffic(70, 30)}});
    for (auto& [version, port] : backend_ports_) {
      auto slice = api().Create(kEndpointSlices, ns_, Slice(ns_, version, port));
      INFO(slice.status().ToString());
      REQUIRE(slice.ok());
    }

    router_port_ = testing::FreePort();
    REQUIRE(router_port_ > 0);
    const std::string hosts = dir_.Write(
        "hosts", "127.0.0.1 localhost " + BackendHost("v1") + " " + BackendHost("v2") + "\n");
    const std::string nsswitch = dir_.Write("nsswitch.conf", "hosts: files\n");
    router_ = std::make_unique<testing::BackgroundProcess>(
        std::vector<std::string>{"unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                 "mount --bind \"$0\" /etc/hosts && "
                                 "mount --bind \"$1\" /etc/nsswitch.conf && shift && exec \"$@\"",
                                 hosts, nsswitch, KILN_ROUTER_BIN, "--listen",
                                 "127.0.0.1:" + std::to_string(router_port_), "--kubeconfig",
                                 cluster.kubeconfig, "--namespace", ns_},
        dir_.path() + "/router.log");
    print_router_log_ = std::make_unique<OnExit>([this] {
      if (std::uncaught_exceptions() == 0) return;
      std::fprintf(stderr, "kiln-router's log (namespace %s):\n%s\n", ns_.c_str(),
                   Tail(router_->Output(), 6000).c_str());
    });
    WaitUntil("kiln-router /readyz", [this] {
      REQUIRE_FALSE(router_->Poll().has_value());  // It exited: its log says why.
      return testing::RawHttp(router_port_, "GET", "/readyz").Finish().status == 200;
    });
  }

  RouterRig(const RouterRig&) = delete;
  RouterRig& operator=(const RouterRig&) = delete;

  kube::Client& api() { return *client_; }
  const std::string& ns() const { return ns_; }
  int router_port() const { return router_port_; }

  static json Traffic(int v1, int v2) {
    return json::array({{{"version", "v1"}, {"weight", v1}}, {{"version", "v2"}, {"weight", v2}}});
  }

  // Merge-patches the deployment's status subresource; returns when the
  // write's response came back.
  Clock::time_point SetStatus(const json& status) {
    auto patched =
        api().Patch(api::v1alpha1::kModelDeployments, ns_, kDeployment, kube::PatchType::kMerge,
                    json{{"status", status}}.dump(), {.subresource = "status"});
    const Clock::time_point answered = Clock::now();
    INFO(patched.status().ToString());
    REQUIRE(patched.ok());
    return answered;
  }

  Clock::time_point SetWeights(int v1, int v2) {
    return SetStatus(json{{"canaryWeight", v2}, {"traffic", Traffic(v1, v2)}});
  }

 private:
  testing::TempDir dir_;
  std::unique_ptr<testing::LocalClusters> clusters_;
  std::unique_ptr<kube::Client> client_;
  std::string ns_;
  std::unique_ptr<OnExit> delete_namespace_;
  std::map<std::string, int> backend_ports_;
  std::vector<std::unique_ptr<testing::BackgroundProcess>> backends_;
  int router_port_ = 0;
  std::unique_ptr<testing::BackgroundProcess> router_;
  std::unique_ptr<OnExit> print_router_log_;
};

// Sends `n` requests on one kept-alive connection; who answered, by backend
// ("" for a non-200 answer).
std::map<std::string, int> Count(int port, int n) {
  testing::RawHttp connection(port);
  const std::string request =
      testing::RawHttp::Request("POST", "/v1/completions", CompletionRequest());
  std::map<std::string, int> by_backend;
  for (int i = 0; i < n; ++i) {
    REQUIRE(connection.Send(request));
    testing::RawResponse r = connection.Next();
    REQUIRE(r.status != 0);
    ++by_backend[r.status == 200 ? r.headers["x-kiln-backend"] : ""];
  }
  return by_backend;
}

// One weight flip: when the status write was sent and answered, and the
// send time of the first request after which every request went to the new
// version.
struct FlipTimes {
  double from_answer_ms;  // Negative: the router followed before the answer came.
  double from_write_ms;
};

// Writes weights sending everything to `to` ("v1" or "v2") while `client`
// keeps sending, and waits until every request has gone to `to` for 300 ms.
// Fails on any failed request, or if the router has not followed in 10 s.
FlipTimes Flip(RouterRig& rig, LoadClient& client, const std::string& to) {
  const size_t from = client.size();
  const Clock::time_point sent = Clock::now();
  const Clock::time_point answered = to == "v2" ? rig.SetWeights(0, 100) : rig.SetWeights(100, 0);
  size_t checked = 0;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const std::vector<Sample> samples = client.Since(from);
    for (; checked < samples.size(); ++checked) {
      const Sample& s = samples[checked];
      if (s.status == 200) continue;
      FAIL("a request sent " << Ms(s.sent - answered) << " ms after the write's answer failed: "
                             << s.status << " " << s.body);
    }
    // The first request of the run that ends with the newest one, all to `to`.
    size_t first = samples.size();
    while (first > 0 && samples[first - 1].backend == to) --first;
    if (first < samples.size() &&
        Clock::now() - samples[first].sent >= std::chrono::milliseconds(300)) {
      return {Ms(samples[first].sent - answered), Ms(samples[first].sent - sent)};
    }
    if (Clock::now() - answered > std::chrono::seconds(10)) {
      FAIL("10 s after the write, requests still go to another version than "
           << to << " (" << samples.size() << " sent since)");
    }
  }
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

// `flips` alternating flips (everything to v2, then to v1, ...) under load.
std::vector<FlipTimes> Flips(RouterRig& rig, int flips) {
  LoadClient client(rig.router_port());
  WaitUntil("the load client's first answers", [&] { return client.size() > 10; });
  std::vector<FlipTimes> times;
  for (int i = 0; i < flips; ++i) times.push_back(Flip(rig, client, i % 2 == 0 ? "v2" : "v1"));
  std::printf("router_api: %zu requests on one connection during %d flips, none failed\n",
              client.size(), flips);
  return times;
}

void PrintFlips(const std::vector<FlipTimes>& times) {
  std::vector<double> answer, write;
  std::string each;
  for (const FlipTimes& t : times) {
    answer.push_back(t.from_answer_ms);
    write.push_back(t.from_write_ms);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.2f", each.empty() ? "" : " ", t.from_answer_ms);
    each += buf;
  }
  std::printf(
      "router_api: status write → every request follows, over %zu flips: from the write's "
      "answer p50 %.2f ms, p99 %.2f ms, max %.2f ms; from the write sent p50 %.2f ms, p99 %.2f "
      "ms, max %.2f ms (each from the answer, ms: %s)\n",
      times.size(), Percentile(answer, 0.5), Percentile(answer, 0.99),
      *std::max_element(answer.begin(), answer.end()), Percentile(write, 0.5),
      Percentile(write, 0.99), *std::max_element(write.begin(), write.end()), each.c_str());
  std::fflush(stdout);
}

TEST_CASE("kiln-router routes by ModelDeployment status and EndpointSlices from the API",
          "[integration][router]") {
  RouterRig rig;

  // (a) The weights of the status: 70/30 over 2000 requests. The canary's
  // share is binomial (sd 20.5): ±100 is about 5 sd.
  std::map<std::string, int> split = Count(rig.router_port(), 2000);
  INFO("v1 " << split["v1"] << ", v2 " << split["v2"] << ", failed " << split[""]);
  CHECK(split[""] == 0);
  CHECK(split["v1"] + split["v2"] == 2000);
  CHECK(split["v2"] >= 500);
  CHECK(split["v2"] <= 700);
  std::printf("router_api: 70/30 split over 2000 requests: v1 %d, v2 %d\n", split["v1"],
              split["v2"]);

  // (b) Weight flips under load: the router follows each, no request fails.
  PrintFlips(Flips(rig, 10));

  // (c) The canary's EndpointSlice goes while it has weight: its share
  // passes to the stable (docs/router.md), so no request fails; a tester who
  // asks for the canary by name gets 503 naming the reason. Then the
  // stable's goes too: every request gets that 503.
  rig.SetWeights(50, 50);
  WaitUntil("both versions answering at 50/50", [&] {
    std::map<std::string, int> c = Count(rig.router_port(), 40);
    return c["v1"] > 0 && c["v2"] > 0;
  });
  REQUIRE(rig.api().Delete(kEndpointSlices, rig.ns(), std::string(kDeployment) + "-v2").ok());
  WaitUntil("the canary's share passed to the stable",
            [&] { return Count(rig.router_port(), 40)["v1"] == 40; });
  {
    const std::map<std::string, int> c = Count(rig.router_port(), 200);
    INFO("after the canary's endpoints went: v1 " << c.count("v1") << " of 200");
    CHECK(c.size() == 1);
    CHECK(c.count("v1") == 1);
  }
  auto check_unavailable = [](const testing::RawResponse& r, const std::string& version) {
    INFO(r.status << " " << r.body);
    REQUIRE(r.status == 503);
    json error = json::parse(r.body, nullptr, false);
    REQUIRE(error.is_object());
    CHECK(error["error"].value("code", "") == "no_endpoints");
    CHECK_THAT(error["error"].value("message", ""), Catch::Contains("no ready endpoint"));
    CHECK_THAT(error["error"].value("message", ""), Catch::Contains(version));
  };
  check_unavailable(testing::RawHttp(rig.router_port(), "POST", "/v1/completions",
                                     CompletionRequest(), {{"x-kiln-version", "canary"}})
                        .Finish(),
                    "v2");
  REQUIRE(rig.api().Delete(kEndpointSlices, rig.ns(), std::string(kDeployment) + "-v1").ok());
  testing::RawResponse none;
  WaitUntil("a 503 once no weighted version has an endpoint", [&] {
    none = testing::RawHttp(rig.router_port(), "POST", "/v1/completions", CompletionRequest())
               .Finish();
    return none.status == 503;
  });
  check_unavailable(none, "chat version v");  // Whichever the weights picked.

  // (d) The deployment goes: its model is unknown.
  REQUIRE(rig.api().Delete(api::v1alpha1::kModelDeployments, rig.ns(), kDeployment).ok());
  testing::RawResponse gone;
  WaitUntil("404 for the deleted deployment's model", [&] {
    gone = testing::RawHttp(rig.router_port(), "POST", "/v1/completions", CompletionRequest())
               .Finish();
    return gone.status == 404;
  });
  json error = json::parse(gone.body, nullptr, false);
  INFO(gone.body);
  REQUIRE(error.is_object());
  CHECK(error["error"].value("code", "") == "unknown_model");
  CHECK_THAT(error["error"].value("message", ""), Catch::Contains(kModel));
}

// bench/router_config_latency.sh: 20 flips, p50 and p99.
TEST_CASE("benchmark: a weight written to the API until every request follows",
          "[.][router-bench]") {
  RouterRig rig;
  PrintFlips(Flips(rig, 20));
}

}  // namespace
}  // namespace kiln::router
