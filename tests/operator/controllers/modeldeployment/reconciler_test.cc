// The ModelDeployment reconciler against an in-memory API server, a fixed
// clock and a fake router window: each test drives reconciles by hand and
// plays the Deployment controller by writing each version's ready replicas.
#include "operator/controllers/modeldeployment/reconciler.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include <catch2/catch.hpp>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "base/http_server.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/modeldeployment/metrics.h"
#include "operator/controllers/modeldeployment/quality_gate.h"
#include "operator/controllers/modeldeployment/version_workload.h"
#include "operator/fleet/members.h"
#include "runtime/event_recorder.h"
#include "tests/support/background_process.h"
#include "tests/support/fake_api_server.h"
#include "tests/support/http_probe.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_member.h"

namespace kiln::modeldeployment {
namespace {

using kiln::testing::FakeApiServer;
using nlohmann::json;
using std::chrono::seconds;

constexpr const char* kNs = "serving";
constexpr const char* kName = "chat";

class FakeMetrics final : public MetricsSource {
 public:
  StatusOr<TrafficWindow> Window(const std::string& route, int window_seconds) override {
    asked.push_back(route + " " + std::to_string(window_seconds));
    return answer;
  }
  StatusOr<TrafficWindow> answer = Status::Unavailable("no router");
  std::vector<std::string> asked;
};

// A window where `canary` answers with `error_rate` and p99 `p99`, stable
// cleanly.
TrafficWindow Window(double error_rate, double p99 = 0.1, int64_t requests = 100) {
  TrafficWindow w;
  w["v1"] = {.requests = 100,
             .errors = 0,
             .error_rate = 0,
             .latency_p50 = 0.05,
             .latency_p99 = 0.1,
             .ttft_p99 = 0.02};
  w["v2"] = {.requests = requests,
             .errors = static_cast<int64_t>(error_rate * static_cast<double>(requests)),
             .error_rate = error_rate,
             .latency_p50 = 0.05,
             .latency_p99 = p99,
             .ttft_p99 = 0.02};
  return w;
}

json Md(const json& steps, int replicas = 4) {
  return {
      {"apiVersion", "kiln.dev/v1alpha1"},
      {"kind", "ModelDeployment"},
      {"metadata", {{"name", kName}, {"namespace", kNs}, {"generation", 1}}},
      {"spec",
       {{"model", {{"name", "chat"}, {"version", "v1"}, {"uri", "file:///models/v1"}}},
        {"replicas", replicas},
        {"image", "kiln.dev/kiln-worker:test"},
        {"gpusPerReplica", 0},
        {"strategy", {{"canary", {{"steps", steps}, {"scaleDownDelay", "10m"}}}}},
        {"analysis",
         {{"interval", "10s"},
          {"failureLimit", 1},
          {"inconclusiveLimit", 2},
          {"metrics",
           json::array({{{"name", "errors"}, {"router", {{"metric", "errorRate"}}}, {"max", 0.05}},
                        {{"name", "p99"},
                         {"router", {{"metric", "latencyP99"}, {"compareToStable", true}}},
                         {"max", 0.5}}})}}}}}};
}

class FakePrometheus final : public PrometheusSource {
 public:
  StatusOr<std::optional<double>> Query(const std::string& address,
                                        const std::string& query) override {
    asked.push_back(address + " " + query);
    return answer;
  }
  StatusOr<std::optional<double>> answer = std::optional<double>();
  std::vector<std::string> asked;
};

class Harness {
 public:
  Harness() : client_(NewClient()), events_(*client_, {}) { Restart(); }

  std::unique_ptr<kube::Client> NewClient() {
    return std::make_unique<kube::Client>(kube::RestConfig{.server = "https://fake"},
                                          kube::ClientOptions{.qps = 0, .max_retries = 0},
                                          server.Transport(), RealClock::Get());
  }
  // A new reconciler, as a restarted operator has: it knows only the API.
  void Restart() {
    ModelDeploymentReconcilerOptions o;
    o.metrics_source = &metrics;
    o.prometheus_source = prometheus_source != nullptr ? prometheus_source : &prometheus;
    o.metrics = &rollout_metrics;
    o.now = [this] { return now; };
    o.scale_down_grace = scale_down_grace;
    o.members = members;
    o.member_metrics = member_metrics;
    reconciler_ = std::make_unique<ModelDeploymentReconciler>(*client_, &events_, o);
  }

  void Create(const json& md) {
    REQUIRE(client_->Create(api::v1alpha1::kModelDeployments, kNs, md).ok());
  }
  StatusOr<runtime::Result> Reconcile() {
    const std::map<std::string, int> before = Weights();
    std::map<std::string, int> ready;
    if (ready_now) {
      ready = ready_now();
    } else {
      for (const auto& d : server.Objects("deployments", kNs)) {
        ready[d["metadata"]["labels"][api::kModelVersionLabel]] =
            d.value("status", json::object()).value("readyReplicas", 0);
      }
    }
    auto r = reconciler_->Reconcile(Context(), {kNs, kName});
    // The invariant the router relies on: a version without weight gains
    // some only while it has a ready pod (a version that already had weight
    // may take back a stopped canary's share), and no version with weight
    // loses its Deployment.
    for (const auto& [version, weight] : Weights()) {
      INFO("version " << version << " has weight " << weight << ": " << Status().dump());
      const int had = before.count(version) > 0 ? before.at(version) : 0;
      if (had == 0 && weight > 0) CHECK(ready[version] > 0);
      if (weight > 0)
        CHECK((ready_now ? ready.count(version) > 0 : Deployment(version).has_value()));
    }
    return r;
  }
  std::map<std::string, int> Weights() {
    std::map<std::string, int> out;
    auto md = server.Object("modeldeployments", kNs, kName);
    if (!md) return out;
    for (const auto& t : md->value("status", json::object()).value("traffic", json::array())) {
      out[t["version"]] = t["weight"];
    }
    return out;
  }
  void ReconcileOk(int times = 1) {
    for (int i = 0; i < times; ++i) {
      auto r = Reconcile();
      INFO(r.status().ToString());
      REQUIRE(r.ok());
    }
  }
  // Changes the spec as a person or Git would: the generation moves.
  void EditSpec(const std::function<void(json&)>& edit) {
    json md = *server.Object("modeldeployments", kNs, kName);
    edit(md["spec"]);
    md["metadata"]["generation"] = md["metadata"]["generation"].get<int64_t>() + 1;
    server.Put("modeldeployments", md);
  }
  void SetModel(const std::string& version) {
    EditSpec([&](json& spec) {
      spec["model"]["version"] = version;
      spec["model"]["uri"] = "file:///models/" + version;
    });
  }
  void SetAction(const std::string& action) {
    EditSpec([&](json& spec) { spec["rollout"]["action"] = action; });
  }

  json Status() { return server.Object("modeldeployments", kNs, kName)->value("status", json()); }
  std::optional<json> Deployment(const std::string& version) {
    return server.Object("deployments", kNs, VersionObjectName(kName, version));
  }
  std::optional<json> Service(const std::string& version) {
    return server.Object("services", kNs, VersionObjectName(kName, version));
  }
  // Plays the Deployment controller: `n` of version's pods are ready.
  void SetReady(const std::string& version, int n) {
    auto d = Deployment(version);
    REQUIRE(d.has_value());
    (*d)["status"]["readyReplicas"] = n;
    server.Put("deployments", *d);
  }
  // Marks every existing version's Deployment fully ready.
  void AllReady() {
    for (auto& d : server.Objects("deployments", kNs)) {
      d["status"]["readyReplicas"] = d["spec"]["replicas"];
      server.Put("deployments", d);
    }
  }
  int Weight(const std::string& version) {
    for (const auto& t : Status().value("traffic", json::array())) {
      if (t["version"] == version) return t["weight"].get<int>();
    }
    return 0;
  }
  // The reasons of the Events recorded so far.
  std::vector<std::string> EventReasons() {
    REQUIRE(events_.Flush(seconds(5)));
    std::vector<json> events = server.Objects("events", kNs);
    std::sort(events.begin(), events.end(), [](const json& a, const json& b) {
      return std::stoll(a["metadata"]["resourceVersion"].get<std::string>()) <
             std::stoll(b["metadata"]["resourceVersion"].get<std::string>());
    });
    std::vector<std::string> reasons;
    for (const auto& e : events) reasons.push_back(e.value("reason", ""));
    return reasons;
  }
  bool HasEvent(const std::string& reason) {
    auto r = EventReasons();
    return std::find(r.begin(), r.end(), reason) != r.end();
  }
  // Index of the first request `request` ("METHOD path") made after `from`, or -1.
  int64_t RequestIndex(const std::string& request, size_t from = 0) {
    auto all = server.requests();
    for (size_t i = from; i < all.size(); ++i) {
      if (all[i] == request) return static_cast<int64_t>(i);
    }
    return -1;
  }

  // v1 deployed, ready and taking all traffic.
  void Stable(const json& md) {
    Create(md);
    ReconcileOk();
    AllReady();
    ReconcileOk();
    REQUIRE(Status()["phase"] == "Healthy");
  }

  FakeApiServer server;
  FakeMetrics metrics;
  FakePrometheus prometheus;
  prometheus::Registry registry;
  ModelDeploymentMetrics rollout_metrics{registry};
  std::string Scrape() { return prometheus::TextSerializer().Serialize(registry.Collect()); }
  PrometheusSource* prometheus_source = nullptr;  // Instead of `prometheus`, after Restart.
  // Most tests delete a version as soon as it loses its weight; the grace
  // has its own test.
  std::chrono::milliseconds scale_down_grace{0};
  // The member clusters, for spec.clusterSelector (after Restart).
  fleet::Members* members = nullptr;
  // Where the versions run when not here: each one's ready replicas, the
  // least over the clusters serving it (absent: it runs in none of them).
  std::function<std::map<std::string, int>()> ready_now;
  std::function<std::unique_ptr<MetricsSource>(const std::vector<std::string>&)> member_metrics;
  std::chrono::system_clock::time_point now = std::chrono::system_clock::from_time_t(1'800'000'000);

 private:
  std::unique_ptr<kube::Client> client_;
  runtime::EventRecorder events_;
  std::unique_ptr<ModelDeploymentReconciler> reconciler_;
};

const std::string kStatusPath = std::string("PUT /apis/kiln.dev/v1alpha1/namespaces/") + kNs +
                                "/modeldeployments/" + kName + "/status";
std::string DeletePath(const std::string& resource, const std::string& version) {
  const std::string group = resource == "deployments" ? "/apis/apps/v1" : "/api/v1";
  return "DELETE " + group + "/namespaces/" + kNs + "/" + resource + "/" +
         VersionObjectName(kName, version);
}

TEST_CASE("the first version gets a Deployment and a Service, and traffic once a pod is ready",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.Create(Md(json::array()));
  h.ReconcileOk();
  auto d = h.Deployment("v1");
  REQUIRE(d.has_value());
  CHECK(d->at("spec")["replicas"] == 4);
  const json& labels = d->at("spec")["template"]["metadata"]["labels"];
  CHECK(labels[api::kModelDeploymentLabel] == kName);
  CHECK(labels[api::kModelVersionLabel] == "v1");
  const json& c = d->at("spec")["template"]["spec"]["containers"][0];
  CHECK(c["readinessProbe"]["httpGet"]["path"] == "/readyz");
  CHECK(std::find(c["args"].begin(), c["args"].end(), "/models/v1") != c["args"].end());
  CHECK(d->at("metadata")["ownerReferences"][0]["uid"] == "uid-modeldeployments-chat");
  auto svc = h.Service("v1");
  REQUIRE(svc.has_value());
  CHECK(svc->at("spec")["ports"][0]["name"] == "http");
  CHECK(svc->at("metadata")["labels"][api::kModelVersionLabel] == "v1");

  json s = h.Status();
  INFO(s.dump());
  CHECK(s["stableVersion"] == "v1");
  CHECK(s["phase"] == "Progressing");
  CHECK(s.value("traffic", json::array()).empty());  // No ready pod: no traffic.
  CHECK(s["message"].get<std::string>().find("waiting for a ready replica of v1") !=
        std::string::npos);

  h.SetReady("v1", 1);
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["phase"] == "Healthy");
  CHECK(h.Weight("v1") == 100);
  CHECK(s["readyReplicas"] == 1);
  CHECK(s["selector"] == std::string(api::kModelDeploymentLabel) + "=" + kName);
  // Idempotent: reconciling again writes nothing (Events, recorded in the
  // background, are written first and left out).
  h.EventReasons();
  const size_t writes = h.server.requests().size();
  h.ReconcileOk();
  const std::vector<std::string> requests = h.server.requests();
  for (size_t i = writes; i < requests.size(); ++i) {
    const std::string& r = requests[i];
    if (r.find("/events") != std::string::npos) continue;
    INFO(r);
    CHECK(r.rfind("GET ", 0) == 0);
  }
}

TEST_CASE("a three-step rollout scales the canary before each weight and ends Healthy",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.Stable(Md(
      json::array({{{"setWeight", 25}}, {{"pause", {{"duration", "30s"}}}}, {{"setWeight", 50}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["canaryVersion"] == "v2");
  CHECK(s["currentStep"] == 0);
  CHECK(h.Deployment("v2")->at("spec")["replicas"] == 1);  // 25% of 4.
  CHECK(h.Weight("v2") == 0);                              // Not ready yet.
  CHECK(h.Weight("v1") == 100);

  h.SetReady("v2", 1);
  h.ReconcileOk();
  s = h.Status();
  CHECK(h.Weight("v2") == 25);
  CHECK(h.Weight("v1") == 75);
  CHECK(s["canaryWeight"] == 25);
  CHECK(s["currentStep"] == 1);
  CHECK(s["phase"] == "Paused");
  // The canary is sized for the next weight while it pauses.
  CHECK(h.Deployment("v2")->at("spec")["replicas"] == 2);

  h.now += seconds(20);
  h.ReconcileOk();
  CHECK(h.Status()["currentStep"] == 1);
  h.now += seconds(11);
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["currentStep"] == 2);
  CHECK(h.Weight("v2") == 25);  // 2 replicas needed for 50%, 1 ready.
  CHECK(s["message"].get<std::string>().find("before it takes 50%") != std::string::npos);

  h.SetReady("v2", 2);
  h.ReconcileOk();
  s = h.Status();
  CHECK(h.Weight("v2") == 50);
  CHECK(s["currentStep"] == 3);
  CHECK(h.Deployment("v2")->at("spec")["replicas"] == 4);  // Scaled to all before promotion.
  CHECK(s["phase"] == "Progressing");

  h.SetReady("v2", 4);
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["phase"] == "Healthy");
  CHECK(s["stableVersion"] == "v2");
  CHECK(s["stableUri"] == "file:///models/v2");
  CHECK(s["previousVersion"] == "v1");
  CHECK_FALSE(s.contains("canaryVersion"));
  CHECK(h.Weight("v2") == 100);
  CHECK(h.Weight("v1") == 0);
  CHECK(h.Deployment("v1").has_value());  // Warm for scaleDownDelay.
  CHECK(h.HasEvent("Promoted"));

  h.now += std::chrono::minutes(10);
  h.ReconcileOk();
  CHECK_FALSE(h.Deployment("v1").has_value());
  CHECK_FALSE(h.Service("v1").has_value());
  CHECK_FALSE(h.Status().contains("previousVersion"));
  CHECK(h.Weight("v2") == 100);
}

TEST_CASE("a failed analysis sends all traffic to stable before the canary is removed",
          "[modeldeployment][reconciler][analysis]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 25}}, {{"analysis", {{"duration", "1m"}}}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.metrics.answer = Window(/*error_rate=*/0.5);
  h.ReconcileOk();  // 25%, then the first measurement: one failure is tolerated.
  json s = h.Status();
  INFO(s.dump());
  CHECK(h.Weight("v2") == 25);
  CHECK(s["analysisRuns"][0]["phase"] == "Running");
  CHECK(s["analysisRuns"][0]["measurements"].size() == 2);
  CHECK(h.metrics.asked.back() == std::string(kNs) + "/" + kName + " 10");

  h.now += seconds(5);  // Before the interval: no new measurement.
  h.ReconcileOk();
  CHECK(h.Status()["analysisRuns"][0]["measurements"].size() == 2);

  h.now += seconds(5);
  const size_t before = h.server.requests().size();
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["phase"] == "Degraded");
  CHECK(s["rollbacks"] == 1);
  CHECK(s["stoppedVersion"] == "v2");
  CHECK(h.Weight("v1") == 100);
  CHECK(h.Weight("v2") == 0);
  const std::string message = s["message"];
  CHECK(message.find("errors = 0.5 > max 0.05") != std::string::npos);
  CHECK(s["analysisRuns"][0]["phase"] == "Failed");
  CHECK_FALSE(h.Deployment("v2").has_value());
  // The weights were written before the canary's Deployment was deleted.
  const int64_t written = h.RequestIndex(kStatusPath, before);
  const int64_t deleted = h.RequestIndex(DeletePath("deployments", "v2"), before);
  REQUIRE(written >= 0);
  REQUIRE(deleted >= 0);
  CHECK(written < deleted);
  CHECK(h.HasEvent("AnalysisFailed"));

  const std::string rollbacks =
      R"(kiln_modeldeployment_rollbacks_total{modeldeployment="chat",namespace="serving"} 1)";
  CHECK_THAT(h.Scrape(), Catch::Contains(rollbacks + "\n"));
  CHECK_THAT(h.Scrape(),
             Catch::Contains("kiln_modeldeployment_deployments{phase=\"Degraded\"} 1\n"));
  CHECK_THAT(h.Scrape(),
             Catch::Contains("kiln_modeldeployment_deployments{phase=\"Healthy\"} 0\n"));

  // It stays stopped: reconciling again starts no canary, nor counts again.
  h.now += seconds(60);
  h.ReconcileOk(2);
  CHECK_FALSE(h.Deployment("v2").has_value());
  CHECK(h.Status()["phase"] == "Degraded");
  CHECK(h.Status()["rollbacks"] == 1);
  CHECK_THAT(h.Scrape(), Catch::Contains(rollbacks + "\n"));
}

TEST_CASE("the metrics count deployments by phase and drop a deleted one's series",
          "[modeldeployment][metrics]") {
  prometheus::Registry registry;
  ModelDeploymentMetrics m(registry);
  auto text = [&] { return prometheus::TextSerializer().Serialize(registry.Collect()); };
  m.SetPhase("a", "chat", "Progressing");
  m.SetPhase("a", "chat", "Healthy");
  m.SetPhase("b", "chat", "Healthy");
  m.CountRollbacks("a", "chat", 1);
  m.CountRollbacks("a", "chat", 0);  // Nothing new: no change.
  CHECK_THAT(text(), Catch::Contains("kiln_modeldeployment_deployments{phase=\"Healthy\"} 2\n"));
  CHECK_THAT(text(),
             Catch::Contains("kiln_modeldeployment_deployments{phase=\"Progressing\"} 0\n"));
  CHECK_THAT(
      text(),
      Catch::Contains(
          R"(kiln_modeldeployment_rollbacks_total{modeldeployment="chat",namespace="a"} 1)"));
  m.SetPhase("a", "chat", "");
  CHECK_THAT(text(), Catch::Contains("kiln_modeldeployment_deployments{phase=\"Healthy\"} 1\n"));
  CHECK_THAT(text(), !Catch::Contains("kiln_modeldeployment_rollbacks_total{"));
}

TEST_CASE("an analysis within bounds passes after its duration, and no traffic is inconclusive",
          "[modeldeployment][reconciler][analysis]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 25}}, {{"analysis", {{"duration", "30s"}}}}}), 1));
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);

  SECTION("within bounds") {
    h.metrics.answer = Window(0.01, 0.2);
    h.ReconcileOk();
    for (int i = 0; i < 3; ++i) {
      h.now += seconds(10);
      h.ReconcileOk();
    }
    json s = h.Status();
    INFO(s.dump());
    CHECK(s["analysisRuns"][0]["phase"] == "Successful");
    // 2 metrics at 0, 10, 20 and 30 s.
    CHECK(s["analysisRuns"][0]["measurements"].size() == 8);
    // compareToStable: p99 of v2 minus v1's.
    CHECK(s["analysisRuns"][0]["measurements"][1]["value"].get<double>() ==
          Approx(0.1).margin(1e-9));
    CHECK(s["phase"] == "Healthy");
    CHECK(s["stableVersion"] == "v2");
  }
  SECTION("no traffic") {
    h.metrics.answer = Window(0, 0.1, /*requests=*/0);
    h.ReconcileOk();
    for (int i = 0; i < 2; ++i) {
      h.now += seconds(10);
      h.ReconcileOk();
    }
    json s = h.Status();
    INFO(s.dump());
    CHECK(s["analysisRuns"][0]["phase"] == "Inconclusive");
    CHECK(s["phase"] == "Paused");
    CHECK(s["canaryVersion"] == "v2");
    CHECK(h.Weight("v2") == 25);
    h.now += seconds(60);
    h.ReconcileOk();
    CHECK(h.Status()["phase"] == "Paused");
    h.SetAction("Promote");
    h.ReconcileOk();
    h.AllReady();
    h.ReconcileOk();
    CHECK(h.Status()["stableVersion"] == "v2");
  }
}

TEST_CASE("rollout.action Promote skips the remaining steps once, not for the next rollout",
          "[modeldeployment][reconciler][action]") {
  Harness h;
  h.Stable(
      Md(json::array({{{"setWeight", 10}}, {{"pause", json::object()}}, {{"setWeight", 60}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Paused");
  CHECK(s["message"].get<std::string>().find("until spec.rollout.action is Promote") !=
        std::string::npos);
  h.now += std::chrono::hours(1);
  h.ReconcileOk();
  CHECK(h.Status()["currentStep"] == 1);  // An open pause waits for Promote.

  h.SetAction("Promote");
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["currentStep"] == 3);
  CHECK(s["handledAction"] == "Promote");
  CHECK(s["handledActionGeneration"] == 3);
  CHECK(h.Weight("v2") == 10);  // Not yet fully ready.
  CHECK(h.Deployment("v2")->at("spec")["replicas"] == 4);
  h.AllReady();
  h.ReconcileOk();
  CHECK(h.Status()["stableVersion"] == "v2");
  CHECK(h.Weight("v2") == 100);

  // The next model, with action still Promote: its rollout starts at step 0.
  h.SetModel("v3");
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["canaryVersion"] == "v3");
  CHECK(s["currentStep"] == 0);
  h.SetReady("v3", 1);
  h.ReconcileOk(2);
  CHECK(h.Status()["currentStep"] == 1);
  CHECK(h.Status()["phase"] == "Paused");
}

TEST_CASE("rollout.action Abort stops the canary until the action or the model changes",
          "[modeldeployment][reconciler][action]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 25}}, {{"pause", json::object()}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  REQUIRE(h.Weight("v2") == 25);
  const size_t before = h.server.requests().size();
  h.SetAction("Abort");
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Aborted");
  CHECK(h.Weight("v1") == 100);
  CHECK(h.Weight("v2") == 0);
  CHECK(s.value("rollbacks", 0) == 0);
  CHECK_FALSE(h.Deployment("v2").has_value());
  CHECK(h.RequestIndex(kStatusPath, before) <
        h.RequestIndex(DeletePath("deployments", "v2"), before));
  h.ReconcileOk(3);
  CHECK(h.Status()["phase"] == "Aborted");
  CHECK_FALSE(h.Deployment("v2").has_value());

  h.SetAction("Continue");
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["canaryVersion"] == "v2");
  CHECK(s["currentStep"] == 0);
  CHECK(h.Deployment("v2").has_value());
  CHECK(h.HasEvent("RolloutRetried"));
}

TEST_CASE("rollout.action Rollback within scaleDownDelay returns to the warm version at once",
          "[modeldeployment][reconciler][action]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 50}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  h.AllReady();
  h.ReconcileOk();  // 50%, then all steps done: v2 scaled to 4.
  h.AllReady();
  h.ReconcileOk();
  REQUIRE(h.Status()["stableVersion"] == "v2");
  REQUIRE(h.Status()["previousVersion"] == "v1");

  SECTION("within the window") {
    h.now += std::chrono::minutes(5);
    const size_t before = h.server.requests().size();
    h.SetAction("Rollback");
    h.ReconcileOk();
    json s = h.Status();
    INFO(s.dump());
    CHECK(s["phase"] == "RolledBack");
    CHECK(s["stableVersion"] == "v1");
    CHECK(s["stableUri"] == "file:///models/v1");
    CHECK(s["rollbacks"] == 1);
    CHECK(h.Weight("v1") == 100);
    CHECK_FALSE(s.contains("canaryVersion"));
    CHECK(h.RequestIndex(kStatusPath, before) <
          h.RequestIndex(DeletePath("deployments", "v2"), before));
    CHECK_FALSE(h.Deployment("v2").has_value());
    // Idempotent, and v2 (still spec.model) is not rolled out again.
    h.ReconcileOk(3);
    CHECK(h.Status()["rollbacks"] == 1);
    CHECK(h.Status()["phase"] == "RolledBack");
    CHECK_FALSE(h.Deployment("v2").has_value());
  }
  SECTION("after the window") {
    h.now += std::chrono::minutes(11);
    h.ReconcileOk();
    h.SetAction("Rollback");
    h.ReconcileOk();
    CHECK(h.Status()["stableVersion"] == "v2");
    CHECK(h.Weight("v2") == 100);
    CHECK(h.HasEvent("RollbackImpossible"));
  }
  SECTION("by reverting spec.model") {
    h.SetModel("v1");
    h.ReconcileOk();
    json s = h.Status();
    INFO(s.dump());
    CHECK(s["stableVersion"] == "v1");
    CHECK(h.Weight("v1") == 100);
    CHECK(s["phase"] == "RolledBack");
    h.ReconcileOk();
    CHECK(h.Status()["phase"] == "Healthy");
  }
}

TEST_CASE("a restarted operator resumes a rollout from the status",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 20}},
                           {{"pause", {{"duration", "1m"}}}},
                           {{"setWeight", 40}},
                           {{"analysis", {{"duration", "20s"}}}}})));
  h.metrics.answer = Window(0.0);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  REQUIRE(h.Status()["currentStep"] == 1);
  h.now += seconds(45);
  h.Restart();
  h.ReconcileOk();
  CHECK(h.Status()["currentStep"] == 1);  // 15 s of the pause left, counted from the status.
  h.now += seconds(15);
  h.Restart();
  h.AllReady();
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["currentStep"] == 3);
  CHECK(h.Weight("v2") == 40);
  h.now += seconds(10);
  h.Restart();
  h.ReconcileOk();
  CHECK(h.Status()["analysisRuns"][0]["measurements"].size() == 4);  // One run, resumed.
  h.now += seconds(10);
  h.Restart();
  h.ReconcileOk();
  h.AllReady();
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["stableVersion"] == "v2");
  CHECK(s["analysisRuns"].size() == 1);
  CHECK(s["analysisRuns"][0]["phase"] == "Successful");
}

TEST_CASE("no version ever has weight without a ready pod, whatever the pods do",
          "[modeldeployment][reconciler][property]") {
  // Random readiness, time and spec changes; Harness::Reconcile checks the
  // invariant after every reconcile.
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    Harness h;
    h.Create(Md(json::array({{{"setWeight", 30}},
                             {{"pause", {{"duration", "5s"}}}},
                             {{"setWeight", 70}},
                             {{"analysis", {{"duration", "10s"}}}}}),
                3));
    h.metrics.answer = Window(0.0);
    int version = 1;
    for (int i = 0; i < 60; ++i) {
      switch (rng() % 6) {
        case 0:
          if (version < 4) h.SetModel("v" + std::to_string(++version));
          break;
        case 1:
        case 2:
          for (auto& d : h.server.Objects("deployments", kNs)) {
            d["status"]["readyReplicas"] =
                static_cast<int>(rng() % (d["spec"]["replicas"].get<uint32_t>() + 1));
            h.server.Put("deployments", d);
          }
          break;
        case 3:
          h.SetAction(
              std::vector<std::string>{"Continue", "Promote", "Abort", "Rollback"}[rng() % 4]);
          break;
        default:
          h.now += seconds(rng() % 8);
      }
      auto r = h.Reconcile();
      REQUIRE(r.ok());
    }
  }
}

TEST_CASE("a model URI no worker can load leaves the stable version serving",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 50}}})));
  h.EditSpec([](json& spec) {
    spec["model"]["version"] = "v2";
    spec["model"]["uri"] = "s3://bucket/v2";
  });
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Degraded");
  CHECK(s["message"].get<std::string>().find("s3://") != std::string::npos);
  CHECK(h.Weight("v1") == 100);
  CHECK_FALSE(h.Deployment("v2").has_value());
}

TEST_CASE("a missing or keyless credentials Secret holds back every serving pod, and says which",
          "[modeldeployment][reconciler][s3]") {
  Harness h;
  json md = Md(json::array({{{"setWeight", 50}}}));
  md["spec"]["storage"] = {{"s3", {{"credentialsSecretRef", {{"name", "models-s3"}}}}}};
  md["spec"]["model"]["uri"] = "s3://models/chat/v1.ckpt";
  h.Create(md);
  auto r = h.Reconcile();
  REQUIRE(r.ok());
  CHECK(r->requeue_after == seconds(5));  // Secrets are not watched: looked at again.
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  json condition;
  for (const auto& c : s["conditions"]) {
    if (c["type"] == "CredentialsReady") condition = c;
  }
  CHECK(condition["status"] == "False");
  CHECK(condition["reason"] == "SecretNotFound");
  CHECK(condition["message"] ==
        "Secret serving/models-s3 (spec.storage.s3.credentialsSecretRef) does not exist");
  CHECK_FALSE(h.Deployment("v1").has_value());
  const auto reasons = h.EventReasons();
  CHECK(std::count(reasons.begin(), reasons.end(), "SecretNotFound") == 1);

  json secret = {{"apiVersion", "v1"},
                 {"kind", "Secret"},
                 {"metadata", {{"name", "models-s3"}, {"namespace", kNs}}},
                 {"data", {{"AWS_SECRET_ACCESS_KEY", "c2VjcmV0"}}}};
  h.server.Put("secrets", secret);
  h.ReconcileOk();
  CHECK_FALSE(h.Deployment("v1").has_value());
  // Kept: a range-for over Status()["conditions"] would read a destroyed
  // temporary (ThreadSanitizer found the read after free).
  json status = h.Status();
  for (const auto& c : status["conditions"]) {
    if (c["type"] == "CredentialsReady") CHECK(c["reason"] == "SecretKeyMissing");
  }

  secret["data"]["AWS_ACCESS_KEY_ID"] = "QUtJQQ==";
  h.server.Put("secrets", secret);
  h.ReconcileOk();
  auto d = h.Deployment("v1");
  REQUIRE(d.has_value());
  const json& pod = (*d)["spec"]["template"]["spec"];
  CHECK(pod["containers"][0]["args"][2] == "s3://models/chat/v1.ckpt");
  bool mounted = false;
  for (const auto& v : pod["volumes"]) {
    mounted =
        mounted || (v["name"] == "s3-credentials" && v["secret"]["secretName"] == "models-s3");
  }
  CHECK(mounted);
  status = h.Status();
  for (const auto& c : status["conditions"]) {
    if (c["type"] == "CredentialsReady") CHECK(c["status"] == "True");
  }
}

TEST_CASE("a canary whose worker cannot load the model stays without traffic, with the reason",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 50}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  // Plays the kubelet: the canary's worker exits with its reason.
  json pod = {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", "chat-v2-abc"},
        {"namespace", kNs},
        {"labels", {{api::kModelDeploymentLabel, kName}, {api::kModelVersionLabel, "v2"}}}}},
      {"status",
       {{"phase", "Running"},
        {"containerStatuses",
         json::array(
             {{{"name", "serve"},
               {"ready", false},
               {"state", {{"waiting", {{"reason", "CrashLoopBackOff"}}}}},
               {"lastState",
                {{"terminated",
                  {{"exitCode", 6}, {"message", "cannot open /models/v2: no such file"}}}}}}})}}}};
  h.server.Put("pods", pod);
  h.now += std::chrono::minutes(5);
  h.ReconcileOk(2);
  json s = h.Status();
  INFO(s.dump());
  CHECK(h.Weight("v1") == 100);
  CHECK(h.Weight("v2") == 0);
  CHECK(s["message"].get<std::string>().find(
            "chat-v2-abc: CrashLoopBackOff, last exit 6: cannot open /models/v2") !=
        std::string::npos);
}

TEST_CASE("a canary stuck in ContainerCreating gets the kubelet's Warning in the status",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 50}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  json pod = {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", "chat-v2-abc"},
        {"namespace", kNs},
        {"uid", "pod-uid-1"},
        {"labels", {{api::kModelDeploymentLabel, kName}, {api::kModelVersionLabel, "v2"}}}}},
      {"status",
       {{"phase", "Pending"},
        {"containerStatuses",
         json::array({{{"name", "serve"},
                       {"ready", false},
                       {"state", {{"waiting", {{"reason", "ContainerCreating"}}}}}}})}}}};
  h.server.Put("pods", pod);
  h.ReconcileOk();
  // Starting, nothing wrong known: no reason in the message.
  CHECK(h.Status()["message"].get<std::string>().find("chat-v2-abc") == std::string::npos);

  auto event = [&](const std::string& name, const std::string& type, const std::string& reason,
                   const std::string& about_uid, const std::string& when,
                   const std::string& message) {
    h.server.Put("events", {{"apiVersion", "v1"},
                            {"kind", "Event"},
                            {"metadata", {{"name", name}, {"namespace", kNs}}},
                            {"type", type},
                            {"reason", reason},
                            {"message", message},
                            {"lastTimestamp", when},
                            {"involvedObject",
                             {{"kind", "Pod"}, {"name", "chat-v2-abc"}, {"uid", about_uid}}}});
  };
  event("e1", "Normal", "Scheduled", "pod-uid-1", "2027-01-15T08:00:00Z", "assigned to node-1");
  event("e2", "Warning", "FailedMount", "pod-uid-1", "2027-01-15T08:00:05Z",
        "MountVolume.SetUp failed for volume \"shared\" : hostPath type check failed: /models is "
        "not a directory");
  event("e3", "Warning", "FailedCreatePodSandBox", "pod-uid-1", "2027-01-15T08:00:01Z",
        "an older problem");
  // An earlier pod of the same name (another UID): not this one's.
  event("e4", "Warning", "FailedMount", "pod-uid-0", "2027-01-15T08:00:09Z", "old pod");
  h.ReconcileOk();
  const std::string message = h.Status()["message"];
  INFO(message);
  CHECK(message.find("chat-v2-abc: FailedMount: MountVolume.SetUp failed for volume \"shared\" "
                     ": hostPath type check failed: /models is not a directory") !=
        std::string::npos);
  CHECK(h.Weight("v2") == 0);

  // Once the container runs, its Events no longer speak for it.
  pod["status"]["containerStatuses"][0]["state"] = {{"running", json::object()}};
  h.server.Put("pods", pod);
  h.ReconcileOk();
  CHECK(h.Status()["message"].get<std::string>().find("FailedMount") == std::string::npos);
}

// strategy.canary.progressDeadline: a canary that never gets the ready
// replicas its step needs is stopped once the deadline (from the step's
// start) has passed, with the pods' reason; it never took traffic. The
// default is 10 minutes.
TEST_CASE("a canary not ready within progressDeadline is stopped as Degraded with the reason",
          "[modeldeployment][reconciler]") {
  const bool set = GENERATE(true, false);
  const auto deadline = set ? std::chrono::minutes(2) : std::chrono::minutes(10);
  INFO((set ? "progressDeadline 2m" : "the default (10m)"));
  Harness h;
  json md = Md(json::array({{{"setWeight", 50}}, {{"pause", {{"duration", "1m"}}}}}));
  if (set) md["spec"]["strategy"]["canary"]["progressDeadline"] = "2m";
  h.Stable(md);
  h.SetModel("v2");
  h.ReconcileOk();
  json pod = {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", "chat-v2-abc"},
        {"namespace", kNs},
        {"labels", {{api::kModelDeploymentLabel, kName}, {api::kModelVersionLabel, "v2"}}}}},
      {"status",
       {{"phase", "Pending"},
        {"containerStatuses",
         json::array({{{"name", "serve"},
                       {"ready", false},
                       {"state", {{"waiting", {{"reason", "ImagePullBackOff"}}}}}}})}}}};
  h.server.Put("pods", pod);
  h.now += deadline - std::chrono::seconds(1);
  h.ReconcileOk(2);
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Progressing");
  CHECK(s["message"].get<std::string>().find("waiting for v2") != std::string::npos);
  CHECK(h.Weight("v2") == 0);
  h.now += std::chrono::seconds(2);
  h.ReconcileOk(2);
  s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Degraded");
  const std::string message = s["message"];
  CHECK(message.find("v2 did not have 2 ready replicas (0 now) within the progress deadline") !=
        std::string::npos);
  CHECK(message.find("ImagePullBackOff") != std::string::npos);
  CHECK(h.Weight("v1") == 100);
  CHECK(h.Weight("v2") == 0);
  CHECK(s.value("rollbacks", 0) == 1);
  CHECK(h.HasEvent("ProgressDeadlineExceeded"));
  // Stopped for good: later reconciles leave it so (until the spec changes).
  h.now += std::chrono::minutes(30);
  h.ReconcileOk(2);
  CHECK(h.Status()["phase"] == "Degraded");
  CHECK(h.Weight("v1") == 100);
}

// Plays the Job controller and kubelet: the gate Job's pod with both
// containers finished, each with `kiln-worker eval`'s report (or an error).
json GatePod(const json& job, const std::string& canary_message, const std::string& stable_message,
             int canary_exit = 0) {
  auto terminated = [](const std::string& name, const std::string& message, int exit_code) {
    return json{{"name", name},
                {"ready", false},
                {"state", {{"terminated", {{"exitCode", exit_code}, {"message", message}}}}}};
  };
  return {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", job["metadata"]["name"].get<std::string>() + "-x1"},
        {"namespace", kNs},
        {"labels", job["spec"]["template"]["metadata"]["labels"]},
        {"ownerReferences",
         json::array({{{"uid", job["metadata"]["uid"]}, {"kind", "Job"}, {"controller", true}}})}}},
      {"status",
       {{"phase", canary_exit == 0 ? "Succeeded" : "Failed"},
        {"containerStatuses", json::array({terminated("canary", canary_message, canary_exit),
                                           terminated("stable", stable_message, 0)})}}}};
}

std::string Report(double loss) {
  return json{{"examples", 10},
              {"loss", {{"tokens", 400}, {"mean", loss}, {"perplexity", std::exp(loss)}}},
              {"passed", true}}
      .dump();
}

TEST_CASE("the quality gate scores the canary against stable before it takes any traffic",
          "[modeldeployment][reconciler][gate]") {
  Harness h;
  json md = Md(json::array({{{"setWeight", 50}}}), 2);
  md["spec"]["analysis"]["qualityGate"] = {{"evaluationSet", "file:///eval/held-out.jsonl"},
                                           {"maxRegression", 0.02}};
  h.Stable(md);
  h.SetModel("v2");
  h.ReconcileOk();
  const std::string job_name = GateJobName(kName, "v2");
  auto job = h.server.Object("jobs", kNs, job_name);
  REQUIRE(job.has_value());
  const json& containers = (*job)["spec"]["template"]["spec"]["containers"];
  REQUIRE(containers.size() == 2);
  const std::vector<std::string> canary_args = containers[0]["args"];
  // The same samples (the same seed) for both versions.
  const std::vector<std::string> want = {"eval",
                                         "--data",
                                         "/eval/held-out.jsonl",
                                         "--checkpoint",
                                         "/models/v2",
                                         "--samples",
                                         "256",
                                         "--seed",
                                         "1",
                                         "--report",
                                         "/dev/termination-log"};
  CHECK(canary_args == want);
  CHECK(containers[1]["args"][4] == "/models/v1");
  CHECK(containers[1]["args"][6] == "256");
  CHECK(containers[1]["args"][8] == "1");
  CHECK((*job)["metadata"]["ownerReferences"][0]["uid"] == "uid-modeldeployments-chat");

  h.AllReady();  // The canary is ready, but the gate has not passed.
  h.ReconcileOk(2);
  json s = h.Status();
  INFO(s.dump());
  CHECK(h.Weight("v2") == 0);
  CHECK(s["message"].get<std::string>().find("quality gate") != std::string::npos);
  CHECK(s["analysisRuns"][0]["name"] == "v2-quality-gate");
  CHECK(s["analysisRuns"][0]["phase"] == "Running");

  SECTION("a canary within maxRegression passes and takes its weight") {
    h.server.Put("pods", GatePod(*job, Report(2.02), Report(2.0)));
    h.ReconcileOk();
    s = h.Status();
    CHECK(h.Weight("v2") == 50);
    CHECK(s["analysisRuns"][0]["phase"] == "Successful");
    CHECK(s["analysisRuns"][0]["measurements"].size() == 3);
    CHECK(s["analysisRuns"][0]["measurements"][2]["value"].get<double>() == Approx(0.01));
    CHECK_FALSE(h.server.Object("jobs", kNs, job_name).has_value());
    CHECK(h.HasEvent("QualityGatePassed"));
  }
  SECTION("a worse canary is stopped by the gate, not by latency") {
    const size_t before = h.server.requests().size();
    h.server.Put("pods", GatePod(*job, Report(2.2), Report(2.0)));
    h.ReconcileOk();
    s = h.Status();
    CHECK(s["phase"] == "Degraded");
    CHECK(s["rollbacks"] == 1);
    CHECK(h.Weight("v2") == 0);
    CHECK(h.Weight("v1") == 100);
    CHECK(s["message"].get<std::string>().find(
              "quality gate failed: loss: canary 2.2 vs stable 2 (+10.0%, max +2.0%)") !=
          std::string::npos);
    CHECK(s["analysisRuns"][0]["phase"] == "Failed");
    CHECK(s["analysisRuns"][0]["measurements"][2]["phase"] == "Failed");
    CHECK(h.RequestIndex(kStatusPath, before) <
          h.RequestIndex(DeletePath("deployments", "v2"), before));
    CHECK_FALSE(h.server.Object("jobs", kNs, job_name).has_value());
    CHECK(h.HasEvent("QualityGateFailed"));
    CHECK(h.metrics.asked.empty());  // No router analysis was needed.
  }
  SECTION("an evaluation that fails fails the gate with the worker's reason") {
    h.server.Put("pods", GatePod(*job, "checkpoint /models/v2: no such file", Report(2.0), 6));
    h.ReconcileOk();
    s = h.Status();
    CHECK(s["phase"] == "Degraded");
    CHECK(s["message"].get<std::string>().find(
              "kiln-worker eval of the canary exited 6: checkpoint /models/v2: no such file") !=
          std::string::npos);
  }
}

// Background analysis: `analysis: {background: true}` starts a run that
// measures through the later steps until the rollout completes or fails.
json RunNamed(const json& status, const std::string& name) {
  for (const auto& r : status.value("analysisRuns", json::array())) {
    if (r["name"] == name) return r;
  }
  return json();
}

TEST_CASE("a background analysis measures through the later steps and ends at the promotion",
          "[modeldeployment][reconciler][background]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 25}},
                           {{"analysis", {{"background", true}}}},
                           {{"setWeight", 50}},
                           {{"pause", {{"duration", "30s"}}}}})));
  h.metrics.answer = Window(0.01, 0.2);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();  // 25%, the background run starts and measures, step 2 waits for 2 pods.
  json s = h.Status();
  INFO(s.dump());
  CHECK(h.Weight("v2") == 25);
  CHECK(s["currentStep"] == 2);
  CHECK(s["backgroundAnalysis"] == "v2-step1");
  json run = RunNamed(s, "v2-step1");
  CHECK(run["background"] == true);
  CHECK(run["phase"] == "Running");
  CHECK(run["step"] == 1);
  CHECK(run["measurements"].size() == 2);
  CHECK(h.HasEvent("AnalysisStarted"));

  h.SetReady("v2", 2);
  h.ReconcileOk();
  s = h.Status();
  CHECK(h.Weight("v2") == 50);
  CHECK(s["phase"] == "Paused");
  CHECK(RunNamed(s, "v2-step1")["measurements"].size() == 2);  // Not before its interval.
  for (int i = 0; i < 2; ++i) {
    h.now += seconds(10);
    auto r = h.Reconcile();
    REQUIRE(r.ok());
    CHECK(r->requeue_after <= seconds(10));
  }
  s = h.Status();
  CHECK(s["phase"] == "Paused");
  CHECK(RunNamed(s, "v2-step1")["measurements"].size() == 6);  // Measured during the pause.
  CHECK(RunNamed(s, "v2-step1")["phase"] == "Running");

  h.now += seconds(10);
  h.ReconcileOk();  // The pause is over: all steps done, v2 scaled to 4.
  s = h.Status();
  CHECK(s["currentStep"] == 4);
  CHECK(RunNamed(s, "v2-step1")["measurements"].size() == 8);
  h.AllReady();
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["phase"] == "Healthy");
  CHECK(s["stableVersion"] == "v2");
  CHECK_FALSE(s.contains("backgroundAnalysis"));
  run = RunNamed(s, "v2-step1");
  CHECK(run["phase"] == "Successful");
  CHECK(run.contains("finishedAt"));
  CHECK_THAT(run["message"].get<std::string>(), Catch::Contains("ended at the promotion of v2"));
  // Ended: no more measurements.
  h.now += seconds(30);
  h.ReconcileOk();
  CHECK(RunNamed(h.Status(), "v2-step1")["measurements"].size() == 8);
}

TEST_CASE("a background analysis that fails at a later step rolls the canary back",
          "[modeldeployment][reconciler][background]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 25}},
                           {{"analysis", {{"background", true}}}},
                           {{"setWeight", 50}},
                           {{"pause", json::object()}}})));
  h.metrics.answer = Window(0.0);
  h.SetModel("v2");
  h.ReconcileOk();
  h.AllReady();
  h.ReconcileOk();
  h.AllReady();
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  REQUIRE(h.Weight("v2") == 50);
  REQUIRE(s["currentStep"] == 3);  // The open pause, long after the background step.
  REQUIRE(s["phase"] == "Paused");

  h.metrics.answer = Window(/*error_rate=*/0.4);
  h.now += seconds(10);
  h.ReconcileOk();  // One failed measurement is tolerated (failureLimit 1).
  CHECK(h.Status()["phase"] == "Paused");
  CHECK(h.Weight("v2") == 50);
  h.now += seconds(10);
  const size_t before = h.server.requests().size();
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["phase"] == "Degraded");
  CHECK(s["rollbacks"] == 1);
  CHECK(s["stoppedVersion"] == "v2");
  CHECK(h.Weight("v1") == 100);
  CHECK(h.Weight("v2") == 0);
  CHECK_FALSE(s.contains("backgroundAnalysis"));
  const std::string message = s["message"];
  CHECK_THAT(message, Catch::Contains("analysis failed at step 3 (background, from step 1): "
                                      "errors = 0.4 > max 0.05"));
  CHECK_THAT(message, Catch::Contains("v2 rolled back, v1 takes all traffic"));
  CHECK(RunNamed(s, "v2-step1")["phase"] == "Failed");
  // The weights were written before the canary's Deployment was deleted.
  const int64_t written = h.RequestIndex(kStatusPath, before);
  const int64_t deleted = h.RequestIndex(DeletePath("deployments", "v2"), before);
  REQUIRE(written >= 0);
  REQUIRE(deleted >= 0);
  CHECK(written < deleted);
  CHECK(h.HasEvent("AnalysisFailed"));
  h.now += seconds(60);
  h.ReconcileOk(2);
  CHECK(h.Status()["rollbacks"] == 1);
  CHECK_FALSE(h.Deployment("v2").has_value());
}

TEST_CASE("a restarted operator keeps a background analysis measuring, and Promote ends it",
          "[modeldeployment][reconciler][background]") {
  Harness h;
  h.Stable(Md(json::array(
      {{{"setWeight", 25}}, {{"analysis", {{"background", true}}}}, {{"pause", json::object()}}})));
  h.metrics.answer = Window(0.0);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  REQUIRE(h.Status()["currentStep"] == 2);
  REQUIRE(RunNamed(h.Status(), "v2-step1")["measurements"].size() == 2);

  h.now += seconds(6);
  h.Restart();
  auto r = h.Reconcile();
  REQUIRE(r.ok());
  // Nothing in the new reconciler's memory: the next measurement is due 4 s
  // on, counted from the last one in the status.
  CHECK(r->requeue_after == seconds(4));
  CHECK(RunNamed(h.Status(), "v2-step1")["measurements"].size() == 2);
  h.now += seconds(4);
  h.Restart();
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(RunNamed(s, "v2-step1")["measurements"].size() == 4);
  CHECK(s["backgroundAnalysis"] == "v2-step1");
  CHECK(s["analysisRuns"].size() == 1);  // The same run, resumed.

  h.SetAction("Promote");
  h.ReconcileOk();
  s = h.Status();
  CHECK_FALSE(s.contains("backgroundAnalysis"));
  json run = RunNamed(s, "v2-step1");
  CHECK(run["phase"] == "Successful");
  CHECK_THAT(run["message"].get<std::string>(),
             Catch::Contains("ended by rollout.action Promote (4 measurements"));
  h.AllReady();
  h.ReconcileOk();
  CHECK(h.Status()["stableVersion"] == "v2");
  CHECK(RunNamed(h.Status(), "v2-step1")["measurements"].size() == 4);
}

TEST_CASE("a second background analysis ends the first and measures on its own",
          "[modeldeployment][reconciler][background]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 25}},
                           {{"analysis", {{"background", true}}}},
                           {{"setWeight", 50}},
                           {{"analysis", {{"background", true}}}},
                           {{"pause", json::object()}}})));
  h.metrics.answer = Window(0.0);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  h.now += seconds(10);
  h.SetReady("v2", 2);
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["currentStep"] == 4);
  CHECK(s["backgroundAnalysis"] == "v2-step3");
  json first = RunNamed(s, "v2-step1");
  CHECK(first["phase"] == "Successful");
  CHECK_THAT(first["message"].get<std::string>(),
             Catch::Contains("ended at step 3, where a new background analysis starts"));
  CHECK(first["measurements"].size() == 4);
  json second = RunNamed(s, "v2-step3");
  CHECK(second["phase"] == "Running");
  CHECK(second["measurements"].size() == 2);
  h.now += seconds(10);
  h.ReconcileOk();
  CHECK(RunNamed(h.Status(), "v2-step1")["measurements"].size() == 4);
  CHECK(RunNamed(h.Status(), "v2-step3")["measurements"].size() == 4);
}

TEST_CASE("a background analysis without traffic to judge holds the promotion for a person",
          "[modeldeployment][reconciler][background]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 25}}, {{"analysis", {{"background", true}}}}})));
  h.metrics.answer = Window(0, 0.1, /*requests=*/0);
  h.SetModel("v2");
  h.ReconcileOk();
  h.AllReady();
  h.ReconcileOk();  // 25%, the run starts, all steps done: v2 scaled to 4.
  h.AllReady();
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Paused");
  CHECK(s["canaryVersion"] == "v2");
  CHECK(h.Weight("v2") == 25);
  CHECK(RunNamed(s, "v2-step1")["phase"] == "Inconclusive");
  CHECK_THAT(s["message"].get<std::string>(),
             Catch::Contains("the background analysis of v2 (from step 1) is inconclusive "
                             "(errors: no successful measurement since step 1"));
  h.now += seconds(60);
  h.ReconcileOk();
  CHECK(h.Status()["phase"] == "Paused");
  h.SetAction("Promote");
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["stableVersion"] == "v2");
  CHECK(h.Weight("v2") == 100);
  CHECK(RunNamed(s, "v2-step1")["phase"] == "Inconclusive");
  CHECK_FALSE(s.contains("backgroundAnalysis"));
}

TEST_CASE("a qualityGate step scores the canary again with its traffic held where it is",
          "[modeldeployment][reconciler][gate]") {
  Harness h;
  json md = Md(json::array({{{"setWeight", 50}}, {{"qualityGate", {{"samples", 512}}}}}), 2);
  md["spec"]["analysis"]["qualityGate"] = {{"evaluationSet", "file:///eval/held-out.jsonl"},
                                           {"maxRegression", 0.02}};
  h.Stable(md);
  h.SetModel("v2");
  h.ReconcileOk();
  auto first = h.server.Object("jobs", kNs, GateJobName(kName, "v2"));
  REQUIRE(first.has_value());
  h.AllReady();
  h.server.Put("pods", GatePod(*first, Report(2.0), Report(2.0)));
  h.ReconcileOk();  // The first gate passes, 50%, then step 1's gate starts.
  json s = h.Status();
  INFO(s.dump());
  CHECK(h.Weight("v2") == 50);
  CHECK(s["currentStep"] == 1);
  CHECK(RunNamed(s, "v2-quality-gate")["phase"] == "Successful");
  CHECK(RunNamed(s, "v2-step1-quality-gate")["phase"] == "Running");
  CHECK(RunNamed(s, "v2-step1-quality-gate")["step"] == 1);
  CHECK_THAT(s["message"].get<std::string>(), Catch::Contains("step 1: quality gate"));
  const std::string job_name = GateJobName(kName, "v2", 1);
  CHECK(job_name != GateJobName(kName, "v2"));
  auto job = h.server.Object("jobs", kNs, job_name);
  REQUIRE(job.has_value());
  CHECK((*job)["spec"]["template"]["spec"]["containers"][0]["args"][6] == "512");
  CHECK((*job)["spec"]["template"]["spec"]["containers"][1]["args"][4] == "/models/v1");
  CHECK_FALSE(h.server.Object("jobs", kNs, GateJobName(kName, "v2")).has_value());
  // The first gate's pod lingers, but it is not this Job's: still running.
  h.now += seconds(5);
  h.ReconcileOk();
  CHECK(h.Status()["currentStep"] == 1);
  CHECK(RunNamed(h.Status(), "v2-step1-quality-gate")["phase"] == "Running");

  SECTION("it passes and the rollout goes on") {
    h.server.Put("pods", GatePod(*job, Report(2.01), Report(2.0)));
    h.ReconcileOk();
    s = h.Status();
    CHECK(RunNamed(s, "v2-step1-quality-gate")["phase"] == "Successful");
    CHECK(RunNamed(s, "v2-step1-quality-gate")["measurements"].size() == 3);
    CHECK(s["currentStep"] == 2);
    CHECK_FALSE(h.server.Object("jobs", kNs, job_name).has_value());
    h.AllReady();
    h.ReconcileOk();
    CHECK(h.Status()["stableVersion"] == "v2");
    CHECK(h.Weight("v2") == 100);
  }
  SECTION("it fails and the canary is rolled back") {
    const size_t before = h.server.requests().size();
    h.server.Put("pods", GatePod(*job, Report(2.2), Report(2.0)));
    h.ReconcileOk();
    s = h.Status();
    CHECK(s["phase"] == "Degraded");
    CHECK(s["rollbacks"] == 1);
    CHECK(h.Weight("v1") == 100);
    CHECK(h.Weight("v2") == 0);
    CHECK_THAT(s["message"].get<std::string>(),
               Catch::Contains("quality gate failed at step 1: loss: canary 2.2 vs stable 2 "
                               "(+10.0%, max +2.0%); v2 rolled back, v1 takes all traffic"));
    CHECK(RunNamed(s, "v2-step1-quality-gate")["phase"] == "Failed");
    CHECK(h.RequestIndex(kStatusPath, before) <
          h.RequestIndex(DeletePath("deployments", "v2"), before));
    CHECK_FALSE(h.server.Object("jobs", kNs, job_name).has_value());
    CHECK(h.HasEvent("QualityGateFailed"));
  }
}

TEST_CASE("a qualityGate step without spec.analysis.qualityGate stops the canary, saying so",
          "[modeldeployment][reconciler][gate]") {
  Harness h;
  h.Stable(Md(json::array({{{"setWeight", 50}}, {{"qualityGate", json::object()}}}), 2));
  h.SetModel("v2");
  h.ReconcileOk();
  h.AllReady();
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Degraded");
  CHECK(h.Weight("v1") == 100);
  CHECK_THAT(s["message"].get<std::string>(),
             Catch::Contains("step 1: a qualityGate step needs spec.analysis.qualityGate"));
}

TEST_CASE("a Prometheus metric out of bounds rolls the canary back",
          "[modeldeployment][reconciler][analysis][prometheus]") {
  Harness h;
  json md = Md(json::array({{{"setWeight", 20}}, {{"analysis", {{"duration", "1m"}}}}}), 1);
  md["spec"]["analysis"]["failureLimit"] = 0;
  md["spec"]["analysis"]["metrics"] =
      json::array({{{"name", "bad-answers"},
                    {"prometheus",
                     {{"address", "http://prometheus.monitoring:9090"},
                      {"query", R"(sum(rate(bad{version="{{version}}"}[1m])))"}}},
                    {"max", 0.1}}});
  h.Stable(md);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.prometheus.answer = std::optional<double>(0.05);
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(h.Weight("v2") == 20);
  REQUIRE(h.prometheus.asked.size() == 1);
  CHECK(h.prometheus.asked[0] ==
        R"(http://prometheus.monitoring:9090 sum(rate(bad{version="v2"}[1m])))");
  CHECK(s["analysisRuns"][0]["measurements"][0]["phase"] == "Successful");

  h.prometheus.answer = std::optional<double>(0.4);
  h.now += seconds(10);
  h.ReconcileOk();
  s = h.Status();
  CHECK(s["phase"] == "Degraded");
  CHECK(h.Weight("v1") == 100);
  CHECK(s["message"].get<std::string>().find("bad-answers = 0.4 > max 0.1") != std::string::npos);
  CHECK(h.metrics.asked.size() == 2);  // The router window is read, but unused here.
}

// A real Prometheus (Debian's `prometheus`; the test is skipped without it)
// scrapes a stand-in on 127.0.0.1 that exposes kiln-router's request and
// error counters (v2 answers 40% of its requests with errors); the analysis
// asks it through HttpPrometheusSource and rolls v2 back.
TEST_CASE("a canary is rolled back by its error rate measured by a real Prometheus",
          "[modeldeployment][prometheus][process]") {
  const char* env = std::getenv("KILN_PROMETHEUS_BIN");
  const std::string bin = env != nullptr ? env : "/usr/bin/prometheus";
  if (access(bin.c_str(), X_OK) != 0) {
    WARN("skipped: no Prometheus at " << bin
                                      << " (apt-get install prometheus, or set "
                                         "KILN_PROMETHEUS_BIN)");
    return;
  }
  testing::TempDir dir;
  std::mutex mu;
  int64_t scrapes = 0;
  const int metrics_port = testing::FreePort();
  auto exporter = HttpServer::Start(
      {.bind_address = "127.0.0.1:" + std::to_string(metrics_port)},
      {HttpRoute::Get("/metrics", [&](const HttpRequest&) {
        std::lock_guard<std::mutex> lock(mu);
        ++scrapes;
        const std::string n = std::to_string(scrapes * 100), e = std::to_string(scrapes * 40);
        return HttpReply{.content_type = "text/plain; version=0.0.4",
                         .body =
                             "# TYPE kiln_router_requests_total counter\n"
                             "kiln_router_requests_total{route=\"serving/chat\",version=\"v1\"} " +
                             n +
                             "\n"
                             "kiln_router_requests_total{route=\"serving/chat\",version=\"v2\"} " +
                             n +
                             "\n"
                             "# TYPE kiln_router_errors_total counter\n"
                             "kiln_router_errors_total{route=\"serving/chat\",version=\"v1\"} 0\n"
                             "kiln_router_errors_total{route=\"serving/chat\",version=\"v2\"} " +
                             e + "\n"};
      })});
  REQUIRE(exporter.ok());
  const int prom_port = testing::FreePort();
  const std::string config =
      dir.Write("prometheus.yml",
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: router\n    static_configs:\n"
                "      - targets: ['127.0.0.1:" +
                    std::to_string(metrics_port) + "']\n");
  testing::BackgroundProcess prometheus_process(
      {bin, "--config.file=" + config, "--storage.tsdb.path=" + dir.path() + "/data",
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
      dir.path() + "/prometheus.out");
  const std::string address = "http://127.0.0.1:" + std::to_string(prom_port);
  const std::string query = R"(sum(rate(kiln_router_errors_total{version="{{version}}"}[5s])) / )"
                            R"(sum(rate(kiln_router_requests_total{version="{{version}}"}[5s])))";
  HttpPrometheusSource source;
  // Until Prometheus has two scrapes of the canary to take a rate from.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  StatusOr<std::optional<double>> ready = std::optional<double>();
  while (std::chrono::steady_clock::now() < deadline) {
    ready = source.Query(address, ExpandQuery(query, "v2"));
    if (ready.ok() && ready->has_value()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  INFO(prometheus_process.Output());
  REQUIRE(ready.ok());
  REQUIRE(ready->has_value());
  CHECK(**ready == Approx(0.4).margin(1e-6));

  Harness h;
  h.prometheus_source = &source;
  h.Restart();
  json md = Md(json::array({{{"setWeight", 20}}, {{"analysis", {{"duration", "1m"}}}}}), 1);
  md["spec"]["analysis"]["failureLimit"] = 0;
  md["spec"]["analysis"]["metrics"] =
      json::array({{{"name", "error-share"},
                    {"prometheus", {{"address", address}, {"query", query}}},
                    {"max", 0.05}}});
  h.Stable(md);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["phase"] == "Degraded");
  CHECK(h.Weight("v1") == 100);
  CHECK(s["message"].get<std::string>().find("error-share = 0.4 > max 0.05") != std::string::npos);
  (*exporter)->Drain(std::chrono::seconds(1));
}

TEST_CASE("with the Gateway API provider the HTTPRoute's backendRefs carry the weights",
          "[modeldeployment][reconciler][gateway]") {
  Harness h;
  // The user's route: parents, matches and filters are left alone.
  h.server.Put(
      "httproutes",
      {{"apiVersion", "gateway.networking.k8s.io/v1"},
       {"kind", "HTTPRoute"},
       {"metadata", {{"name", "chat-route"}, {"namespace", kNs}}},
       {"spec",
        {{"parentRefs", json::array({{{"name", "edge"}}})},
         {"rules",
          json::array(
              {{{"matches", json::array({{{"path", {{"type", "PathPrefix"}, {"value", "/v1"}}}}})},
                {"backendRefs", json::array()}}})}}}});
  json md = Md(json::array({{{"setWeight", 25}}}), 4);
  md["spec"]["traffic"] = {{"provider", "GatewayAPI"},
                           {"gatewayAPI", {{"httpRoute", "chat-route"}}}};
  h.Stable(md);
  auto refs = [&] {
    return (*h.server.Object("httproutes", kNs, "chat-route"))["spec"]["rules"][0]["backendRefs"];
  };
  REQUIRE(refs().size() == 1);
  CHECK(refs()[0]["name"] == VersionObjectName(kName, "v1"));
  CHECK(refs()[0]["port"] == 8000);
  CHECK(refs()[0]["weight"] == 100);
  CHECK((*h.server.Object("httproutes", kNs,
                          "chat-route"))["spec"]["rules"][0]["matches"][0]["path"]["value"] ==
        "/v1");

  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  REQUIRE(refs().size() == 2);
  CHECK(refs()[0]["weight"] == 75);
  CHECK(refs()[1]["name"] == VersionObjectName(kName, "v2"));
  CHECK(refs()[1]["weight"] == 25);

  // Abort: the route gives v1 everything before v2's Deployment goes.
  const size_t before = h.server.requests().size();
  h.SetAction("Abort");
  h.ReconcileOk();
  REQUIRE(refs().size() == 1);
  CHECK(refs()[0]["weight"] == 100);
  const int64_t route_put =
      h.RequestIndex(std::string("PUT /apis/gateway.networking.k8s.io/v1/namespaces/") + kNs +
                         "/httproutes/chat-route",
                     before);
  REQUIRE(route_put >= 0);
  CHECK(h.RequestIndex(kStatusPath, before) < route_put);
  CHECK(route_put < h.RequestIndex(DeletePath("deployments", "v2"), before));

  // A missing route stops the reconcile before anything is scaled down.
  h.server.Remove("httproutes", kNs, "chat-route");
  h.SetModel("v3");
  CHECK_FALSE(h.Reconcile().ok());
  CHECK(h.HasEvent("HTTPRouteMissing"));

  // A route none of whose rules is the deployment's is left alone.
  const json foreign = {
      {"apiVersion", "gateway.networking.k8s.io/v1"},
      {"kind", "HTTPRoute"},
      {"metadata", {{"name", "chat-route"}, {"namespace", kNs}}},
      {"spec",
       {{"rules",
         json::array({{{"backendRefs", json::array({{{"name", "docs"}, {"port", 80}}})}}})}}}};
  h.server.Put("httproutes", foreign);
  CHECK_FALSE(h.Reconcile().ok());
  CHECK(h.HasEvent("HTTPRouteNoBackends"));
  CHECK((*h.server.Object("httproutes", kNs, "chat-route"))["spec"] == foreign["spec"]);
}

TEST_CASE("an analysis that never had traffic to judge does not pass at its end",
          "[modeldeployment][reconciler][analysis]") {
  Harness h;
  json md = Md(json::array({{{"setWeight", 25}}, {{"analysis", {{"duration", "20s"}}}}}), 1);
  md["spec"]["analysis"]["inconclusiveLimit"] = 100;
  h.Stable(md);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.metrics.answer = Window(0, 0.1, /*requests=*/0);
  h.ReconcileOk();
  for (int i = 0; i < 2; ++i) {
    h.now += seconds(10);
    h.ReconcileOk();
  }
  json s = h.Status();
  INFO(s.dump());
  CHECK(s["analysisRuns"][0]["phase"] == "Inconclusive");
  CHECK(s["phase"] == "Paused");
  CHECK(s["canaryVersion"] == "v2");
  CHECK(s["message"].get<std::string>().find("no successful measurement") != std::string::npos);
}

TEST_CASE("a version that lost its weight keeps its pods for scale_down_grace",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.scale_down_grace = seconds(10);
  h.Restart();
  h.Stable(Md(json::array({{{"setWeight", 25}}, {{"pause", json::object()}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  h.SetAction("Abort");
  auto r = h.Reconcile();
  REQUIRE(r.ok());
  CHECK(h.Weight("v2") == 0);
  auto d = h.Deployment("v2");
  REQUIRE(d.has_value());  // Still there, marked.
  CHECK(d->at("metadata")["annotations"].contains("kiln.dev/unweighted-since"));
  CHECK(d->at("spec")["replicas"] == 1);
  CHECK(r->requeue_after <= seconds(10));
  h.now += seconds(6);
  h.Restart();  // The time it lost its weight is on the Deployment, not in memory.
  h.ReconcileOk();
  CHECK(h.Deployment("v2").has_value());
  CHECK(h.Service("v2").has_value());
  h.now += seconds(4);
  h.ReconcileOk();
  CHECK_FALSE(h.Deployment("v2").has_value());
  CHECK_FALSE(h.Service("v2").has_value());
}

TEST_CASE("strategy.canary.drainDelay sets how long a version without weight keeps its pods",
          "[modeldeployment][reconciler]") {
  Harness h;
  h.scale_down_grace = seconds(10);  // The operator's default, overridden below.
  h.Restart();
  json md = Md(json::array({{{"setWeight", 25}}, {{"pause", json::object()}}}));
  md["spec"]["strategy"]["canary"]["drainDelay"] = "30s";
  h.Stable(md);
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  h.SetAction("Abort");
  auto r = h.Reconcile();
  REQUIRE(r.ok());
  CHECK(h.Weight("v2") == 0);
  CHECK(r->requeue_after == seconds(30));
  h.now += seconds(20);  // Past the operator's 10 s, within the spec's 30 s.
  h.ReconcileOk();
  CHECK(h.Deployment("v2").has_value());
  h.now += seconds(10);
  h.ReconcileOk();
  CHECK_FALSE(h.Deployment("v2").has_value());

  // 0s: gone in the reconcile that takes its weight.
  h.EditSpec([](json& spec) { spec["strategy"]["canary"]["drainDelay"] = "0s"; });
  h.SetModel("v3");
  h.ReconcileOk();
  h.SetReady("v3", 1);
  h.ReconcileOk();
  h.SetAction("Continue");  // A new action value, so that Abort acts again next.
  h.ReconcileOk();
  h.SetAction("Abort");
  h.ReconcileOk();
  CHECK(h.Weight("v3") == 0);
  CHECK_FALSE(h.Deployment("v3").has_value());
}

TEST_CASE("a version live again within the grace loses its mark", "[modeldeployment][reconciler]") {
  Harness h;
  h.scale_down_grace = seconds(10);
  h.Restart();
  h.Stable(Md(json::array({{{"setWeight", 25}}, {{"pause", json::object()}}})));
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 1);
  h.ReconcileOk();
  h.SetAction("Abort");
  h.ReconcileOk();
  h.SetAction("Continue");  // Retried at once: the same Deployment serves it.
  h.ReconcileOk();
  auto d = h.Deployment("v2");
  REQUIRE(d.has_value());
  CHECK_FALSE(d->at("metadata")["annotations"].contains("kiln.dev/unweighted-since"));
  h.now += seconds(30);
  h.ReconcileOk();
  CHECK(h.Deployment("v2").has_value());
  CHECK(h.Weight("v2") == 25);
}

TEST_CASE("an analysis step before any weight judges the canary on mirrored copies only",
          "[modeldeployment][reconciler][mirror]") {
  const bool bad = GENERATE(false, true);
  INFO((bad ? "copies failing" : "copies fine"));
  Harness h;
  json md = Md(json::array({{{"analysis", {{"duration", "20s"}, {"metrics", {"mirrored-errors"}}}}},
                            {{"setWeight", 50}}}));
  md["spec"]["analysis"]["metrics"].push_back(
      {{"name", "mirrored-errors"},
       {"router", {{"metric", "errorRate"}, {"traffic", "Mirrored"}}},
       {"max", 0.05}});
  md["spec"]["traffic"] = {{"provider", "Router"}, {"router", {{"mirrorPercent", 20}}}};
  h.Stable(md);
  // The canary has no weight, so no live requests: only copies.
  TrafficWindow w;
  w["v1"] = {.requests = 100, .latency_p50 = 0.05, .latency_p99 = 0.1};
  w["v2"].mirrored = {.requests = 20,
                      .errors = bad ? 10 : 0,
                      .error_rate = bad ? 0.5 : 0.0,
                      .latency_p50 = 0.05,
                      .latency_p99 = 0.1};
  h.metrics.answer = w;
  h.SetModel("v2");
  h.ReconcileOk();
  h.SetReady("v2", 2);  // Sized for its next weight, 50% of 4.
  for (int i = 0; i < 4; ++i) {
    h.ReconcileOk();
    h.now += seconds(10);
  }
  h.ReconcileOk();
  json s = h.Status();
  INFO(s.dump());
  // Only the step's metric was measured: the live ones (errors, p99) would
  // have been inconclusive, the canary having no live request.
  std::set<std::string> measured;
  for (const auto& r : s["analysisRuns"]) {
    for (const auto& m : r["measurements"]) measured.insert(m["metric"]);
  }
  CHECK(measured == std::set<std::string>{"mirrored-errors"});
  if (bad) {
    CHECK(s["phase"] == "Degraded");
    CHECK(h.Weight("v2") == 0);
    CHECK(s["message"].get<std::string>().find("mirrored") != std::string::npos);
  } else {
    CHECK(s["analysisRuns"].back()["phase"] == "Successful");
    CHECK(h.Weight("v2") == 50);
  }
}

// ---- Serving in member clusters (spec.clusterSelector) ----

json MemberCluster(const std::string& name, const std::string& region, bool ready) {
  return {{"apiVersion", "kiln.dev/v1alpha1"},
          {"kind", "MemberCluster"},
          {"metadata", {{"name", name}, {"labels", {{"region", region}}}}},
          {"spec", {{"kubeconfigSecretRef", {{"name", name + "-kubeconfig"}}}}},
          {"status",
           {{"conditions", json::array({{{"type", "Ready"},
                                         {"status", ready ? "True" : "False"},
                                         {"reason", ready ? "Connected" : "HeartbeatFailed"}}})}}}};
}

// The hub (Harness's server) with MemberClusters m1, m2 (region eu, Ready),
// m3 (region us, Ready) and m4 (region eu, not Ready), all connected.
class Fleet {
 public:
  explicit Fleet(Harness& h) : h_(h) {
    for (const auto& [name, region, ready] :
         {std::tuple{"m1", "eu", true}, std::tuple{"m2", "eu", true}, std::tuple{"m3", "us", true},
          std::tuple{"m4", "eu", false}}) {
      apis_[name] = std::make_unique<FakeApiServer>();
      h.server.Put("memberclusters", MemberCluster(name, region, ready));
      members_.Put(name, std::make_shared<kiln::testing::TestMember>(name, *apis_[name]), 1);
    }
    h.members = &members_;
    h.ready_now = [this] {
      // Over the members matching region=eu and Ready: m1 and m2 unless a
      // test moved one.
      std::map<std::string, int> out;
      bool first = true;
      for (const char* m : {"m1", "m2"}) {
        auto mc = h_.server.Object("memberclusters", "", m);
        if (mc->at("metadata").at("labels").at("region") != "eu") continue;
        std::map<std::string, int> here;
        for (const auto& d : api(m).Objects("deployments", kNs)) {
          here[d["metadata"]["labels"][api::kModelVersionLabel]] =
              d.value("status", json::object()).value("readyReplicas", 0);
        }
        if (first) {
          out = here;
          first = false;
          continue;
        }
        for (auto it = out.begin(); it != out.end();) {
          if (here.count(it->first) == 0) {
            it = out.erase(it);
          } else {
            it->second = std::min(it->second, here[it->first]);
            ++it;
          }
        }
      }
      return out;
    };
    h.Restart();
  }
  FakeApiServer& api(const std::string& name) { return *apis_.at(name); }
  std::optional<json> Deployment(const std::string& member, const std::string& version) {
    return api(member).Object("deployments", kNs, VersionObjectName(kName, version));
  }
  // Plays the member's Deployment controller.
  void SetReady(const std::string& member, const std::string& version, int n) {
    auto d = Deployment(member, version);
    REQUIRE(d.has_value());
    (*d)["status"]["readyReplicas"] = n;
    api(member).Put("deployments", *d);
  }
  void SetRegion(const std::string& name, const std::string& region) {
    json mc = *h_.server.Object("memberclusters", "", name);
    mc["metadata"]["labels"]["region"] = region;
    h_.server.Put("memberclusters", mc);
  }
  // status.clusters as "name:state".
  std::vector<std::string> Clusters() {
    std::vector<std::string> out;
    for (const auto& c : h_.Status().value("clusters", json::array())) {
      out.push_back(c["name"].get<std::string>() + ":" + c["state"].get<std::string>());
    }
    return out;
  }

 private:
  Harness& h_;
  std::map<std::string, std::unique_ptr<FakeApiServer>> apis_;
  fleet::Members members_;
};

json FleetMd(const json& steps) {
  json md = Md(steps, 2);
  md["spec"]["clusterSelector"] = {{"matchLabels", {{"region", "eu"}}}};
  return md;
}

TEST_CASE("a deployment with a clusterSelector serves in every Ready matching member",
          "[modeldeployment][reconciler][members]") {
  Harness h;
  Fleet fleet(h);
  h.Create(FleetMd(json::array({{{"setWeight", 50}}})));
  h.ReconcileOk();

  // v1 runs in m1 and m2, labelled with the deployment's UID (no owner
  // reference crosses clusters), in a namespace made for it; nothing in m3
  // (another region), m4 (not Ready) or the hub.
  for (const char* m : {"m1", "m2"}) {
    INFO(m);
    auto d = fleet.Deployment(m, "v1");
    REQUIRE(d.has_value());
    // The fake API server's UID for it.
    CHECK(d->at("metadata").at("labels").at(api::kModelDeploymentUidLabel) ==
          "uid-modeldeployments-chat");
    CHECK_FALSE(d->at("metadata").contains("ownerReferences"));
    CHECK(d->at("spec").at("replicas") == 2);
    CHECK(fleet.api(m).Object("services", kNs, VersionObjectName(kName, "v1")).has_value());
    CHECK(fleet.api(m).Object("namespaces", "", kNs).has_value());
  }
  CHECK_FALSE(fleet.Deployment("m3", "v1").has_value());
  CHECK_FALSE(fleet.Deployment("m4", "v1").has_value());
  CHECK_FALSE(h.Deployment("v1").has_value());
  CHECK(fleet.Clusters() == std::vector<std::string>{"m1:Serving", "m2:Serving", "m4:Unreachable"});

  // Ready in one member only: no weight yet (m2's router would have no pod
  // of v1 to send its share to).
  fleet.SetReady("m1", "v1", 2);
  h.ReconcileOk();
  CHECK(h.Weight("v1") == 0);
  fleet.SetReady("m2", "v1", 1);
  h.ReconcileOk();
  CHECK(h.Weight("v1") == 100);
  CHECK(h.Status()["phase"] == "Healthy");
  CHECK(h.Status()["replicas"] == 4);
  CHECK(h.Status()["readyReplicas"] == 3);
  CHECK(h.Status()["clusters"][0]["readyReplicas"] == 2);
  CHECK(h.Status()["clusters"][1]["readyReplicas"] == 1);

  // A canary takes its weight only once it is ready in every Serving member.
  h.SetModel("v2");
  h.ReconcileOk();
  REQUIRE(fleet.Deployment("m1", "v2").has_value());
  REQUIRE(fleet.Deployment("m2", "v2").has_value());
  fleet.SetReady("m1", "v2", 1);
  h.ReconcileOk();
  CHECK(h.Weight("v2") == 0);
  CHECK(h.Status()["message"].get<std::string>().find("v2") != std::string::npos);
  fleet.SetReady("m2", "v2", 1);
  h.ReconcileOk();
  CHECK(h.Weight("v2") == 50);
}

TEST_CASE("a member that no longer matches is cleaned up and leaves the status",
          "[modeldeployment][reconciler][members]") {
  Harness h;
  Fleet fleet(h);
  h.Create(FleetMd(json::array({{{"setWeight", 50}}})));
  h.ReconcileOk();
  fleet.SetReady("m1", "v1", 2);
  fleet.SetReady("m2", "v1", 2);
  h.ReconcileOk();
  REQUIRE(h.Weight("v1") == 100);

  fleet.SetRegion("m2", "us");
  h.ReconcileOk();
  CHECK(fleet.Clusters() == std::vector<std::string>{"m1:Serving", "m2:Leaving", "m4:Unreachable"});
  CHECK_FALSE(fleet.Deployment("m2", "v1").has_value());
  CHECK_FALSE(fleet.api("m2").Object("services", kNs, VersionObjectName(kName, "v1")).has_value());
  CHECK(fleet.Deployment("m1", "v1").has_value());
  CHECK(h.Weight("v1") == 100);  // m1 still serves it.
  h.ReconcileOk();
  CHECK(fleet.Clusters() == std::vector<std::string>{"m1:Serving", "m4:Unreachable"});

  // The selector removed: the deployment serves in its own cluster, and the
  // members are cleaned up.
  // Make before break: m1 keeps serving until v1 is ready here.
  h.EditSpec([](json& spec) { spec.erase("clusterSelector"); });
  h.ready_now = nullptr;  // The invariant's readiness is the hub's again.
  h.ReconcileOk();
  CHECK(h.Deployment("v1").has_value());
  CHECK(fleet.Clusters() == std::vector<std::string>{"m1:Leaving"});
  CHECK(fleet.Deployment("m1", "v1").has_value());
  h.AllReady();
  h.ReconcileOk();
  CHECK(fleet.Clusters() == std::vector<std::string>{"m1:Leaving"});
  CHECK_FALSE(fleet.Deployment("m1", "v1").has_value());
  CHECK(fleet.api("m1").Objects("services", kNs).empty());
  h.ReconcileOk();
  CHECK_FALSE(h.Status().contains("clusters"));
}

TEST_CASE("with no Ready matching member the status says why",
          "[modeldeployment][reconciler][members]") {
  Harness h;
  Fleet fleet(h);
  json md = FleetMd(json::array({{{"setWeight", 50}}}));
  md["spec"]["clusterSelector"]["matchLabels"]["region"] = "ap";
  h.Create(md);
  auto r = h.Reconcile();
  REQUIRE(r.ok());
  CHECK(r->requeue_after > std::chrono::milliseconds(0));
  CHECK(h.Weight("v1") == 0);
  const std::string message = h.Status().value("message", "");
  INFO(message);
  CHECK(message.find("no Ready member cluster matches spec.clusterSelector (region=ap)") !=
        std::string::npos);
  for (const char* m : {"m1", "m2", "m3", "m4"}) CHECK_FALSE(fleet.Deployment(m, "v1").has_value());
}

TEST_CASE("a deployment that is gone is swept from the members, an earlier one's leftovers too",
          "[modeldeployment][reconciler][members]") {
  Harness h;
  Fleet fleet(h);
  // A Deployment an earlier deployment of the same name left in m1.
  json leftover =
      BuildVersionWorkload(
          [] {
            json md = FleetMd(json::array());
            md["metadata"]["uid"] = "md-uid-0";
            return md.get<api::v1alpha1::ModelDeployment>();
          }(),
          {.version = "v0", .uri = "file:///models/v0", .replicas = 1, .in_member = true})
          .value()
          .deployment;
  fleet.api("m1").Put("deployments", leftover);
  const std::string leftover_name = leftover["metadata"]["name"];
  // And one that is not kiln's at all (no UID label), which stays.
  json theirs = leftover;
  theirs["metadata"]["name"] = "chat-theirs";
  theirs["metadata"]["labels"].erase(api::kModelDeploymentUidLabel);
  fleet.api("m1").Put("deployments", theirs);

  h.Create(FleetMd(json::array({{{"setWeight", 50}}})));
  h.ReconcileOk();
  CHECK_FALSE(fleet.api("m1").Object("deployments", kNs, leftover_name).has_value());
  CHECK(fleet.api("m1").Object("deployments", kNs, "chat-theirs").has_value());
  REQUIRE(fleet.Deployment("m1", "v1").has_value());
  REQUIRE(fleet.Deployment("m2", "v1").has_value());

  h.server.Remove("modeldeployments", kNs, kName);
  h.ReconcileOk();
  CHECK_FALSE(fleet.Deployment("m1", "v1").has_value());
  CHECK_FALSE(fleet.Deployment("m2", "v1").has_value());
  CHECK(fleet.api("m1").Objects("services", kNs).empty());
  CHECK(fleet.api("m1").Object("deployments", kNs, "chat-theirs").has_value());
}

TEST_CASE("the analysis reads the router windows of the members the deployment serves in",
          "[modeldeployment][reconciler][members]") {
  Harness h;
  Fleet fleet(h);
  std::vector<std::vector<std::string>> asked_for;
  h.member_metrics = [&](const std::vector<std::string>& clusters) {
    asked_for.push_back(clusters);
    auto m = std::make_unique<FakeMetrics>();
    m->answer = Window(0.5);  // The canary fails.
    return std::unique_ptr<MetricsSource>(std::move(m));
  };
  h.Restart();
  h.Create(FleetMd(json::array({{{"setWeight", 20}}, {{"analysis", {{"duration", "30s"}}}}})));
  h.ReconcileOk();
  fleet.SetReady("m1", "v1", 2);
  fleet.SetReady("m2", "v1", 2);
  h.ReconcileOk();
  h.SetModel("v2");
  h.ReconcileOk();
  fleet.SetReady("m1", "v2", 1);
  fleet.SetReady("m2", "v2", 1);
  h.ReconcileOk(2);
  h.now += seconds(11);  // The second failed measurement is over failureLimit 1.
  h.ReconcileOk();
  INFO(h.Status().dump());
  REQUIRE_FALSE(asked_for.empty());
  CHECK(asked_for.back() == std::vector<std::string>{"m1", "m2"});
  CHECK(h.metrics.asked.empty());  // Not the operator's own router.
  CHECK(h.Weight("v1") == 100);
  CHECK(h.Status()["phase"] == "Degraded");
}

}  // namespace
}  // namespace kiln::modeldeployment
