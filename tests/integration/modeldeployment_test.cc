// The ModelDeployment controller against the shared local control plane's
// last cluster: real Deployments, ReplicaSets and EndpointSlices (the
// cluster's kube-controller-manager), pods on kwok's fake nodes, whose
// readiness kwok fakes (no kiln-worker runs, so /readyz is never asked).
// The router's window comes over HTTP from a stand-in on 127.0.0.1 that
// serves /debug/summary as kiln-router does, with the numbers the test sets.
// A first version comes up and takes all traffic; a new one rolls out by its
// steps (a weight, an analysis) to Healthy; rollout.action Rollback returns
// to the warm previous version; a canary whose error rate is too high is
// rolled back by the analysis. Prints the measured times.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "base/http_server.h"
#include "kube/api_error.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/modeldeployment/metrics_source.h"
#include "operator/controllers/modeldeployment/reconciler.h"
#include "operator/controllers/modeldeployment/version_workload.h"
#include "runtime/manager.h"
#include "tests/support/http_probe.h"
#include "tests/support/local_clusters.h"

namespace kiln::modeldeployment {
namespace {

using kube::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Polls `probe` (bounded) until it returns true; the time it took.
template <typename F>
Clock::duration WaitUntil(const std::string& what, F probe,
                          std::chrono::seconds limit = std::chrono::seconds(90)) {
  const auto start = Clock::now();
  while (Clock::now() - start < limit) {
    if (probe()) return Clock::now() - start;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("timed out waiting for " << what);
  return limit;
}

// kiln-router's /debug/summary for route `route`: each version's error rate.
std::string Summary(const std::string& route, const std::map<std::string, double>& error_rates) {
  json versions = json::array();
  for (const auto& [version, rate] : error_rates) {
    versions.push_back({{"route", route},
                        {"version", version},
                        {"requests", 200},
                        {"errors", static_cast<int>(rate * 200)},
                        {"errorRate", rate},
                        {"latencyP50", 0.05},
                        {"latencyP99", 0.2},
                        {"timeToFirstTokenP50", 0.01},
                        {"timeToFirstToken", 0.03}});
  }
  return json{{"windowSeconds", 1}, {"versions", versions}}.dump();
}

TEST_CASE("a ModelDeployment rolls out, rolls back from the spec and on a failed analysis",
          "[integration][modeldeployment]") {
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  const testing::LocalCluster& cluster = lc->clusters().back();
  auto made = lc->Client(cluster);
  REQUIRE(made.ok());
  kube::Client& client = **made;
  auto applied =
      lc->Kubectl(cluster, {"apply", "--server-side", "-f",
                            std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_modeldeployments.yaml"});
  REQUIRE(applied.ok());
  REQUIRE(applied->exit_code == 0);
  auto established = lc->Kubectl(cluster, {"wait", "--for=condition=Established",
                                           "crd/modeldeployments.kiln.dev", "--timeout=60s"});
  REQUIRE(established.ok());
  REQUIRE(established->exit_code == 0);
  const std::string ns = testing::UniqueName("kiln-md");
  REQUIRE(client.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", ns}}}}).ok());
  const std::string name = "chat";
  const std::string route = ns + "/" + name;

  // The router's stand-in on loopback.
  std::mutex mu;
  std::string summary = Summary(route, {{"v1", 0}});
  const int port = testing::FreePort();
  auto router =
      HttpServer::Start({.bind_address = "127.0.0.1:" + std::to_string(port)},
                        {HttpRoute::Get("/debug/summary", [&](const HttpRequest&) {
                          std::lock_guard<std::mutex> lock(mu);
                          return HttpReply{.content_type = "application/json", .body = summary};
                        })});
  REQUIRE(router.ok());
  auto source = RouterMetricsSource::New("http://127.0.0.1:" + std::to_string(port));
  REQUIRE(source.ok());

  runtime::Manager manager(client, {.metrics_bind_address = "0", .health_probe_bind_address = "0"});
  auto mds = manager.GetInformer(client, api::v1alpha1::kModelDeployments, {.ns = ns});
  REQUIRE(mds.ok());
  auto deployments = manager.GetInformer(client, kube::resources::kDeployments,
                                         {.ns = ns, .label_selector = api::kModelDeploymentLabel});
  REQUIRE(deployments.ok());
  ModelDeploymentReconciler reconciler(
      client, &manager.events(),
      {.metrics_source = source->get(), .resync = std::chrono::milliseconds(500)});
  runtime::Controller& controller = manager.AddController("modeldeployment", reconciler);
  controller.For(**mds);
  controller.Owns(**deployments, api::v1alpha1::kModelDeployments);
  std::atomic<bool> stop{false};
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });

  auto status = [&] {
    auto md = client.Get(api::v1alpha1::kModelDeployments, ns, name);
    return md.ok() ? md->value("status", json::object()) : json::object();
  };
  auto weight = [&](const json& s, const std::string& version) {
    for (const auto& t : s.value("traffic", json::array())) {
      if (t.value("version", "") == version) return t.value("weight", 0);
    }
    return 0;
  };
  auto patch_spec = [&](const json& spec) {
    REQUIRE(client
                .Patch(api::v1alpha1::kModelDeployments, ns, name, kube::PatchType::kMerge,
                       json{{"spec", spec}}.dump())
                .ok());
  };
  auto model = [](const std::string& version) {
    return json{{"name", "chat"}, {"version", version}, {"uri", "file:///models/" + version}};
  };

  // 1. The first version: traffic once a pod is ready.
  auto start = Clock::now();
  REQUIRE(client
              .Create(api::v1alpha1::kModelDeployments, ns,
                      {{"apiVersion", "kiln.dev/v1alpha1"},
                       {"kind", "ModelDeployment"},
                       {"metadata", {{"name", name}, {"namespace", ns}}},
                       {"spec",
                        {{"model", model("v1")},
                         {"replicas", 2},
                         {"image", "kiln.dev/kiln-worker:test"},
                         {"gpusPerReplica", 0},
                         {"strategy",
                          {{"canary",
                            {{"steps", json::array({{{"setWeight", 50}},
                                                    {{"analysis", {{"duration", "2s"}}}}})},
                             {"scaleDownDelay", "1m"}}}}},
                         {"analysis",
                          {{"interval", "1s"},
                           {"failureLimit", 0},
                           {"metrics", json::array({{{"name", "errors"},
                                                     {"router", {{"metric", "errorRate"}}},
                                                     {"max", 0.05}}})}}}}}})
              .ok());
  WaitUntil("v1 takes all traffic", [&] {
    const json s = status();
    return s.value("phase", "") == "Healthy" && weight(s, "v1") == 100;
  });
  std::printf("modeldeployment: first version serving %.2f s after the apply\n",
              Seconds(Clock::now() - start));
  // The router finds the version's endpoints: an EndpointSlice with the
  // Service's labels and a port named http.
  WaitUntil("v1's EndpointSlice", [&] {
    auto slices = client.List(
        kube::Resource{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true}, ns,
        {.label_selector = std::string(api::kModelDeploymentLabel) + "=" + name + "," +
                           api::kModelVersionLabel + "=v1"});
    if (!slices.ok() || (*slices)["items"].empty()) return false;
    const json& slice = (*slices)["items"][0];
    return slice.value("ports", json::array()).size() == 1 &&
           slice["ports"][0].value("name", "") == "http" &&
           slice.value("endpoints", json::array()).size() == 2;
  });

  // 2. A rollout by the steps, to Healthy; the canary's weight is seen.
  {
    std::lock_guard<std::mutex> lock(mu);
    summary = Summary(route, {{"v1", 0}, {"v2", 0.01}});
  }
  start = Clock::now();
  patch_spec({{"model", model("v2")}});
  int seen_canary_weight = 0;
  WaitUntil("v2 promoted", [&] {
    const json s = status();
    if (s.value("canaryVersion", "") == "v2") {
      seen_canary_weight = std::max(seen_canary_weight, weight(s, "v2"));
    }
    return s.value("phase", "") == "Healthy" && s.value("stableVersion", "") == "v2" &&
           weight(s, "v2") == 100;
  });
  std::printf("modeldeployment: 2-step rollout v1 → v2 (50%%, 2 s analysis) %.2f s end to end\n",
              Seconds(Clock::now() - start));
  CHECK(seen_canary_weight == 50);
  json s = status();
  INFO(s.dump());
  CHECK(s.value("previousVersion", "") == "v1");
  REQUIRE(s["analysisRuns"].size() == 1);
  CHECK(s["analysisRuns"][0]["phase"] == "Successful");
  CHECK(s["analysisRuns"][0]["measurements"].size() >= 2);
  CHECK(client.Get(kube::resources::kDeployments, ns, VersionObjectName(name, "v1")).ok());

  // 3. rollout.action Rollback: back to the warm v1 at once.
  start = Clock::now();
  patch_spec({{"rollout", {{"action", "Rollback"}}}});
  const auto rolled_back = WaitUntil("the rollback to v1", [&] {
    const json st = status();
    return st.value("stableVersion", "") == "v1" && weight(st, "v1") == 100;
  });
  std::printf("modeldeployment: rollout.action Rollback → 100%% on v1 in the status %.3f s\n",
              Seconds(rolled_back));
  s = status();
  CHECK(s["phase"] == "RolledBack");
  CHECK(s["rollbacks"] == 1);
  WaitUntil("v2's Deployment to go", [&] {
    return kube::IsNotFound(
        client.Get(kube::resources::kDeployments, ns, VersionObjectName(name, "v2")).status());
  });

  // 4. A canary that answers with errors: rolled back by the analysis.
  {
    std::lock_guard<std::mutex> lock(mu);
    summary = Summary(route, {{"v1", 0}, {"v3", 0.4}});
  }
  start = Clock::now();
  patch_spec({{"model", model("v3")}, {"rollout", {{"action", "Continue"}}}});
  WaitUntil("v3 rolled back by the analysis",
            [&] { return status().value("phase", "") == "Degraded"; });
  std::printf("modeldeployment: canary with 40%% errors rolled back %.2f s after the spec change\n",
              Seconds(Clock::now() - start));
  s = status();
  INFO(s.dump());
  CHECK(weight(s, "v1") == 100);
  CHECK(weight(s, "v3") == 0);
  CHECK(s["rollbacks"] == 2);
  CHECK(s["message"].get<std::string>().find("errors = 0.4 > max 0.05") != std::string::npos);
  WaitUntil("v3's Deployment to go", [&] {
    return kube::IsNotFound(
        client.Get(kube::resources::kDeployments, ns, VersionObjectName(name, "v3")).status());
  });

  stop = true;
  REQUIRE(run.get().ok());
  (*router)->Drain(std::chrono::seconds(1));
  // Best effort: the control plane is torn down after the run anyway.
  Status deleted = client.Delete(kube::resources::kNamespaces, "", ns).status();
  CHECK((deleted.ok() || kube::IsNotFound(deleted)));
}

}  // namespace
}  // namespace kiln::modeldeployment
