// A ModelDeployment served in member clusters (spec.clusterSelector), on the
// fleet fixture's three real clusters: the first is the hub (CRDs,
// MemberClusters, their kubeconfig Secrets, the ModelDeployment) and a member
// labelled region=us; the other two are members labelled region=eu. The
// MemberCluster and ModelDeployment controllers run in this process, as
// kiln-operator wires them. Each member's kube-controller-manager makes the
// ReplicaSets, pods and EndpointSlices; kwok fakes the pods' readiness (no
// kiln-worker runs). A kiln-router started with --kubeconfig of one member
// and --hub-kubeconfig of the hub takes the weights from the hub and the
// endpoints from its member. Checked: the versions run in both eu members
// and not in the hub; a rollout reaches Healthy with the new version in
// both; a member relabelled away is cleaned up and leaves status.clusters;
// the deployment deleted is swept from the members.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/base64.h"
#include "base/file.h"
#include "kube/api_error.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/modeldeployment/reconciler.h"
#include "operator/controllers/modeldeployment/version_workload.h"
#include "operator/fleet/fleet.h"
#include "runtime/manager.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/local_clusters.h"
#include "tests/support/raw_http.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace kiln::modeldeployment {
namespace {

using kube::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Waits (bounded: two minutes) until `probe` holds; the time it took.
template <typename F>
Clock::duration WaitUntil(const std::string& what, F probe) {
  const auto start = Clock::now();
  INFO("waiting for " << what);
  REQUIRE(testing::WaitFor(probe, std::chrono::minutes(2)));
  return Clock::now() - start;
}

TEST_CASE("a ModelDeployment with a clusterSelector is served in the matching members",
          "[integration][fleet][modeldeployment]") {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  REQUIRE(lc->clusters().size() >= 3);
  const testing::LocalCluster& hub_cluster = lc->clusters()[0];
  std::vector<std::unique_ptr<kube::Client>> clients;
  for (size_t i = 0; i < 3; ++i) {
    auto c = lc->Client(lc->clusters()[i]);
    REQUIRE(c.ok());
    clients.push_back(std::move(*c));
  }
  kube::Client& hub = *clients[0];
  for (const std::string crd : {"memberclusters", "modeldeployments"}) {
    const Status applied =
        lc->ApplyCrd(hub_cluster, std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_" + crd + ".yaml",
                     crd + ".kiln.dev");
    INFO(applied.ToString());
    REQUIRE(applied.ok());
  }
  const std::string ns = testing::UniqueName("kiln-mdf");
  REQUIRE(hub.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", ns}}}}).ok());
  struct Cleanup {
    std::vector<std::unique_ptr<kube::Client>>& clients;
    std::string ns;
    std::vector<std::string> members;
    ~Cleanup() {
      for (const auto& m : members) (void)clients[0]->Delete(api::v1alpha1::kMemberClusters, "", m);
      for (auto& c : clients) (void)c->Delete(kube::resources::kNamespaces, "", ns);
    }
  } cleanup{clients, ns, {}};

  // MemberClusters: the hub in region us, the others in eu.
  const std::string prefix = testing::UniqueName("mdf");
  std::vector<std::string> members;
  for (size_t i = 0; i < 3; ++i) {
    auto config = ReadFile(lc->clusters()[i].kubeconfig);
    REQUIRE(config.ok());
    const std::string secret = "c" + std::to_string(i);
    REQUIRE(hub.Create(kube::resources::kSecrets, ns,
                       {{"apiVersion", "v1"},
                        {"kind", "Secret"},
                        {"metadata", {{"name", secret}, {"namespace", ns}}},
                        {"data", {{"kubeconfig", Base64Encode(*config)}}}})
                .ok());
    members.push_back(prefix + "-" + std::to_string(i));
    REQUIRE(hub.Create(api::v1alpha1::kMemberClusters, "",
                       {{"apiVersion", "kiln.dev/v1alpha1"},
                        {"kind", "MemberCluster"},
                        {"metadata",
                         {{"name", members.back()},
                          {"labels", {{"region", i == 0 ? "us" : "eu"}, {"run", prefix}}}}},
                        {"spec",
                         {{"kubeconfigSecretRef", {{"name", secret}, {"namespace", ns}}},
                          {"heartbeatInterval", "1s"},
                          {"unreachableAfter", "5s"}}}})
                .ok());
    cleanup.members.push_back(members.back());
  }

  // The controllers, as kiln-operator wires them.
  runtime::Manager manager(hub, {.metrics_bind_address = "0", .health_probe_bind_address = "0"});
  auto fleet = fleet::Fleet::Register(manager, hub, {.secret_namespace = ns});
  REQUIRE(fleet.ok());
  fleet::Fleet& f = **fleet;
  auto mds = manager.GetInformer(hub, api::v1alpha1::kModelDeployments, {.ns = ns});
  REQUIRE(mds.ok());
  ModelDeploymentReconciler reconciler(hub, &manager.events(),
                                       {.members = &f.members(),
                                        .resync = std::chrono::milliseconds(500),
                                        .scale_down_grace = std::chrono::milliseconds(500)});
  runtime::Controller& controller =
      manager.AddController("modeldeployment", reconciler, {.workers = 2});
  controller.For(**mds);
  f.OnMemberPod([&controller](const std::string&, const json& pod) {
    const std::string name =
        pod["metadata"].value("labels", json::object()).value(api::kModelDeploymentLabel, "");
    if (!name.empty()) controller.queue().Add(pod["metadata"].value("namespace", "") + "/" + name);
  });
  std::atomic<bool> stop{false};
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });
  struct StopOnExit {
    std::atomic<bool>& stop;
    ~StopOnExit() { stop = true; }
  } stop_on_exit{stop};

  auto ready = [&](const std::string& m) {
    auto mc = hub.Get(api::v1alpha1::kMemberClusters, "", m);
    if (!mc.ok()) return false;
    for (const auto& c : mc->value("status", json::object()).value("conditions", json::array())) {
      if (c.value("type", "") == "Ready") return c.value("status", "") == "True";
    }
    return false;
  };
  for (const auto& m : members)
    WaitUntil("MemberCluster " + m + " Ready", [&] { return ready(m); });

  const std::string name = "chat";
  auto status = [&] {
    auto md = hub.Get(api::v1alpha1::kModelDeployments, ns, name);
    return md.ok() ? md->value("status", json::object()) : json::object();
  };
  auto weight = [&](const std::string& version) {
    for (const auto& t : status().value("traffic", json::array())) {
      if (t.value("version", "") == version) return t.value("weight", 0);
    }
    return 0;
  };
  auto deployment = [&](size_t cluster, const std::string& version) {
    return clients[cluster]->Get(kube::resources::kDeployments, ns,
                                 VersionObjectName(name, version));
  };
  auto ready_in = [&](size_t cluster, const std::string& version) {
    auto d = deployment(cluster, version);
    return d.ok() ? d->value("status", json::object()).value("readyReplicas", 0) : -1;
  };
  auto clusters = [&] {
    std::vector<std::string> out;
    for (const auto& c : status().value("clusters", json::array())) {
      out.push_back(c.value("name", "") + ":" + c.value("state", ""));
    }
    return out;
  };

  const auto submitted = Clock::now();
  REQUIRE(hub.Create(api::v1alpha1::kModelDeployments, ns,
                     {{"apiVersion", "kiln.dev/v1alpha1"},
                      {"kind", "ModelDeployment"},
                      {"metadata", {{"name", name}, {"namespace", ns}}},
                      {"spec",
                       {{"model", {{"name", "chat"}, {"version", "v1"}, {"uri", "file:///m/v1"}}},
                        {"replicas", 2},
                        {"image", "kiln.dev/kiln-worker:test"},
                        {"gpusPerReplica", 0},
                        {"clusterSelector", {{"matchLabels", {{"region", "eu"}, {"run", prefix}}}}},
                        {"strategy",
                         {{"canary",
                           {{"steps",
                             json::array({{{"setWeight", 50}}, {{"pause", {{"duration", "1s"}}}}})},
                            {"scaleDownDelay", "2s"}}}}}}}})
              .ok());
  const auto serving = WaitUntil("v1 to take all traffic", [&] { return weight("v1") == 100; });
  std::printf("submit → v1 100%% in both eu members: %.2f s\n", Seconds(serving));
  CHECK(ready_in(1, "v1") >= 1);
  CHECK(ready_in(2, "v1") >= 1);
  CHECK(kube::IsNotFound(deployment(0, "v1").status()));  // Region us: not selected.
  CHECK(clusters() == std::vector<std::string>{members[1] + ":Serving", members[2] + ":Serving"});
  {
    auto d = deployment(1, "v1");
    REQUIRE(d.ok());
    CHECK_FALSE((*d)["metadata"].contains("ownerReferences"));
    CHECK((*d)["metadata"]["labels"].value(api::kModelDeploymentUidLabel, "") != "");
  }
  (void)submitted;

  // kiln-router in member 1: the hub's weights, member 1's endpoints.
  testing::TempDir dir;
  const int router_port = testing::FreePort();
  REQUIRE(router_port > 0);
  testing::BackgroundProcess router(
      {KILN_ROUTER_BIN, "--listen", "127.0.0.1:" + std::to_string(router_port), "--kubeconfig",
       lc->clusters()[1].kubeconfig, "--hub-kubeconfig", hub_cluster.kubeconfig, "--namespace", ns},
      dir.path() + "/router.log");
  auto routes = [&] {
    auto r = testing::RawHttp(router_port, "GET", "/debug/routes").Finish();
    return r.status == 200 ? json::parse(r.body, nullptr, false) : json();
  };
  // Each version's weight and endpoint count in the router's table: "v1=100/2".
  auto table = [&] {
    std::vector<std::string> out;
    const json t = routes();
    if (!t.is_object()) return out;
    for (const auto& route : t.value("routes", json::array())) {
      for (const auto& v : route.value("versions", json::array())) {
        out.push_back(v.value("name", "") + "=" + std::to_string(v.value("weight", 0)) + "/" +
                      std::to_string(v.value("endpoints", json::array()).size()));
      }
    }
    return out;
  };
  WaitUntil("kiln-router in member 1 to route v1 to its 2 endpoints", [&] {
    REQUIRE_FALSE(router.Poll().has_value());
    const auto t = table();
    return t == std::vector<std::string>{"v1=100/2"};
  });

  // A rollout: v2 in both members, 50%, a pause, then all traffic.
  const auto rolled = Clock::now();
  REQUIRE(
      hub.Patch(api::v1alpha1::kModelDeployments, ns, name, kube::PatchType::kMerge,
                json{{"spec", {{"model", {{"version", "v2"}, {"uri", "file:///m/v2"}}}}}}.dump())
          .ok());
  WaitUntil("kiln-router in member 1 to split 50/50", [&] {
    const auto t = table();
    return std::find(t.begin(), t.end(), "v2=50/1") != t.end() ||
           std::find(t.begin(), t.end(), "v2=50/2") != t.end();
  });
  CHECK(ready_in(1, "v2") >= 1);
  CHECK(ready_in(2, "v2") >= 1);
  const auto promoted = WaitUntil("v2 Healthy with all traffic", [&] {
    return weight("v2") == 100 && status().value("phase", "") == "Healthy";
  });
  std::printf("v2 rolled out in both members (50%%, 1 s pause): %.2f s\n",
              Seconds(Clock::now() - rolled));
  (void)promoted;

  // Member 2 relabelled away: cleaned up, then dropped from the status.
  REQUIRE(hub.Patch(api::v1alpha1::kMemberClusters, "", members[2], kube::PatchType::kMerge,
                    json{{"metadata", {{"labels", {{"region", "us"}}}}}}.dump())
              .ok());
  WaitUntil("member 2 to be cleaned up and leave status.clusters", [&] {
    return clusters() == std::vector<std::string>{members[1] + ":Serving"} &&
           kube::IsNotFound(deployment(2, "v2").status());
  });
  CHECK(weight("v2") == 100);
  CHECK(ready_in(1, "v2") >= 1);

  // Deleted: swept from member 1.
  REQUIRE(hub.Delete(api::v1alpha1::kModelDeployments, ns, name).ok());
  WaitUntil("member 1 to be swept", [&] {
    auto list = clients[1]->List(kube::resources::kDeployments, ns,
                                 {.label_selector = DeploymentSelector(name)});
    return list.ok() && (*list)["items"].empty();
  });
  stop = true;
  REQUIRE(run.get().ok());
}

}  // namespace
}  // namespace kiln::modeldeployment
