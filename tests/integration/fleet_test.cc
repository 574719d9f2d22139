// The MemberCluster controller against real clusters (fixture kiln_fleet: two
// clusters of its own, since one of them is stopped mid-test). The first
// cluster is the hub (CRDs, MemberClusters, kubeconfig Secrets) and also a
// member; the second is a member whose API server is stopped and restarted.
// Prints how long each transition took.
#include "operator/fleet/fleet.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>

#include <catch2/catch.hpp>

#include "base/base64.h"
#include "base/file.h"
#include "operator/api/v1alpha1/resources.h"
#include "tests/support/local_clusters.h"

namespace kiln::fleet {
namespace {

using kube::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Heartbeat settings of the MemberClusters, in seconds: 1 and 5 unless
// KILN_FLEET_HEARTBEAT / KILN_FLEET_UNREACHABLE_AFTER say otherwise (e.g. 10
// and 40, the example's, to measure those).
int SettingOr(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v == nullptr ? fallback : std::atoi(v);
}
const int kHeartbeat = SettingOr("KILN_FLEET_HEARTBEAT", 1);
const int kUnreachableAfter = SettingOr("KILN_FLEET_UNREACHABLE_AFTER", 5);

struct Hub {
  kube::Client& client;
  std::string ns;

  void PutSecret(const std::string& name, const std::string& kubeconfig) {
    json secret = {{"apiVersion", "v1"},
                   {"kind", "Secret"},
                   {"metadata", {{"name", name}, {"namespace", ns}}},
                   {"data", {{"kubeconfig", Base64Encode(kubeconfig)}}}};
    auto existing = client.Get(kube::resources::kSecrets, ns, name);
    if (existing.ok()) {
      secret["metadata"]["resourceVersion"] = (*existing)["metadata"]["resourceVersion"];
      REQUIRE(client.Update(kube::resources::kSecrets, secret).ok());
    } else {
      REQUIRE(client.Create(kube::resources::kSecrets, ns, secret).ok());
    }
  }
  void PutCluster(const std::string& name, const std::string& secret) {
    json mc = {{"apiVersion", "kiln.dev/v1alpha1"},
               {"kind", "MemberCluster"},
               {"metadata", {{"name", name}}},
               {"spec",
                {{"kubeconfigSecretRef", {{"name", secret}, {"namespace", ns}}},
                 {"heartbeatInterval", std::to_string(kHeartbeat) + "s"},
                 {"unreachableAfter", std::to_string(kUnreachableAfter) + "s"}}}};
    REQUIRE(client.Create(api::v1alpha1::kMemberClusters, "", mc).ok());
  }
  // The condition `type` of MemberCluster `name` (an empty object when absent).
  json Condition(const std::string& name, const std::string& type) {
    auto mc = client.Get(api::v1alpha1::kMemberClusters, "", name);
    if (!mc.ok()) return json::object();
    for (const json& c : mc->value("status", json::object()).value("conditions", json::array())) {
      if (c.value("type", "") == type) return c;
    }
    return json::object();
  }
  // Waits (bounded) until `name`'s condition `type` has `status` (and
  // `reason`, when given); returns how long it took.
  Clock::duration WaitFor(const std::string& name, const std::string& type,
                          const std::string& status, const std::string& reason = "",
                          std::chrono::seconds limit = std::chrono::seconds(120)) {
    const auto start = Clock::now();
    json c;
    while (Clock::now() - start < limit) {
      c = Condition(name, type);
      if (c.value("status", "") == status && (reason.empty() || c.value("reason", "") == reason)) {
        return Clock::now() - start;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL("MemberCluster " << name << " never had " << type << "=" << status << " " << reason
                          << "; last: " << c.dump());
    return limit;
  }
};

TEST_CASE("member clusters are connected, reported, lost and found again", "[integration][fleet]") {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // The figures appear as they are measured.
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  REQUIRE(lc->clusters().size() >= 2);
  const testing::LocalCluster& hub_cluster = lc->clusters()[0];
  const testing::LocalCluster& member_cluster = lc->clusters()[1];
  auto hub_client = lc->Client(hub_cluster);
  REQUIRE(hub_client.ok());
  auto applied = lc->Kubectl(hub_cluster,
                             {"apply", "--server-side", "-f",
                              std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_memberclusters.yaml"});
  REQUIRE(applied.ok());
  REQUIRE(applied->exit_code == 0);
  auto established = lc->Kubectl(hub_cluster, {"wait", "--for=condition=Established",
                                               "crd/memberclusters.kiln.dev", "--timeout=60s"});
  REQUIRE(established.ok());
  REQUIRE(established->exit_code == 0);

  Hub hub{**hub_client, testing::UniqueName("kiln-fleet")};
  REQUIRE(
      hub.client.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", hub.ns}}}}).ok());
  auto hub_read = ReadFile(hub_cluster.kubeconfig),
       member_read = ReadFile(member_cluster.kubeconfig);
  REQUIRE(hub_read.ok());
  REQUIRE(member_read.ok());
  const std::string hub_config = *hub_read, member_config = *member_read;
  // The member's kubeconfig trusting the hub's CA instead of its own.
  std::string wrong_ca = member_config;
  {
    const std::string key = "certificate-authority-data: ";
    auto hub_ca = hub_config.find(key), member_ca = wrong_ca.find(key);
    REQUIRE(hub_ca != std::string::npos);
    REQUIRE(member_ca != std::string::npos);
    auto hub_end = hub_config.find('\n', hub_ca), member_end = wrong_ca.find('\n', member_ca);
    wrong_ca.replace(member_ca, member_end - member_ca,
                     hub_config.substr(hub_ca, hub_end - hub_ca));
  }
  hub.PutSecret("hub", hub_config);
  hub.PutSecret("member", member_config);
  hub.PutSecret("garbage", "this: [is not a kubeconfig");
  hub.PutSecret("wrong-ca", wrong_ca);
  const std::string prefix = testing::UniqueName("fleet");
  const std::string a = prefix + "-hub", b = prefix + "-member", bad = prefix + "-bad",
                    tls = prefix + "-tls", missing = prefix + "-missing";
  hub.PutCluster(a, "hub");
  hub.PutCluster(b, "member");
  hub.PutCluster(bad, "garbage");
  hub.PutCluster(tls, "wrong-ca");
  hub.PutCluster(missing, "no-such-secret");

  runtime::Manager manager(hub.client,
                           {.metrics_bind_address = "0", .health_probe_bind_address = "0"});
  auto fleet = Fleet::Register(manager, hub.client, {.secret_namespace = hub.ns});
  REQUIRE(fleet.ok());
  std::atomic<bool> stop{false};
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });
  // A failed REQUIRE unwinds through here: stop the manager, or the future's
  // destructor waits for it forever.
  struct StopOnExit {
    std::atomic<bool>& stop;
    ~StopOnExit() { stop = true; }
  } stop_on_exit{stop};

  auto ready_a = hub.WaitFor(a, "Ready", "True");
  auto ready_b = hub.WaitFor(b, "Ready", "True");
  std::printf("fleet: hub member Ready after %.2f s, second member after a further %.2f s\n",
              Seconds(ready_a), Seconds(ready_b));
  const int64_t gpus = int64_t{lc->nodes_per_cluster()} * lc->gpus_per_node();
  for (const std::string& name : {a, b}) {
    auto mc = hub.client.Get(api::v1alpha1::kMemberClusters, "", name);
    REQUIRE(mc.ok());
    const json& status = (*mc)["status"];
    CHECK(status.value("totalGPUs", 0) == gpus);
    CHECK(status.value("nodeCount", 0) == lc->nodes_per_cluster());
    CHECK(status.value("kubernetesVersion", "").rfind("v1.", 0) == 0);
    CHECK(status.value("gpus", json::array()).size() == 1);
    CHECK(status.value("nvlinkDomains", json::array()).size() >= 1);
    CHECK(status.value("observedGeneration", 0) == (*mc)["metadata"].value("generation", -1));
  }
  REQUIRE((*fleet)->members().Get(b) != nullptr);
  CHECK((*fleet)->capacity().Snapshot().cluster(b)->free_gpus() <= gpus);

  SECTION("bad input is a reason on the condition; the good members stay Ready") {
    hub.WaitFor(bad, "Ready", "False", "InvalidKubeconfig");
    hub.WaitFor(tls, "Ready", "False", "TLSError");
    hub.WaitFor(missing, "Ready", "False", "SecretNotFound");
    CHECK(hub.Condition(a, "Ready").value("status", "") == "True");
    CHECK(hub.Condition(b, "Ready").value("status", "") == "True");
    // A failing member's status is not rewritten while nothing changes.
    auto before = hub.client.Get(api::v1alpha1::kMemberClusters, "", missing);
    REQUIRE(before.ok());
    std::this_thread::sleep_for(std::chrono::seconds(3 * kHeartbeat));
    auto after = hub.client.Get(api::v1alpha1::kMemberClusters, "", missing);
    REQUIRE(after.ok());
    CHECK((*after)["metadata"]["resourceVersion"] == (*before)["metadata"]["resourceVersion"]);
    auto shown = lc->Kubectl(hub_cluster, {"get", "mc", "-o", "wide"});
    REQUIRE(shown.ok());
    std::printf("fleet: kubectl get mc -o wide\n%s", shown->stdout_data.c_str());

    // Rotating the bad Secret to a working kubeconfig reconnects.
    const auto rotated = Clock::now();
    hub.PutSecret("garbage", member_config);
    hub.WaitFor(bad, "Ready", "True");
    std::printf("fleet: rotated Secret → Ready in %.2f s\n", Seconds(Clock::now() - rotated));
    CHECK((*fleet)->members().Get(bad) != nullptr);
  }

  SECTION("a stopped API server makes its member Unreachable, and Ready again once it answers") {
    const double down_seconds = kUnreachableAfter + 2 * kHeartbeat + 8;
    const auto stopped = Clock::now();
    auto restart = std::async(std::launch::async, [&] {
      return lc->Restart(member_cluster, "kube-apiserver", down_seconds);
    });
    auto not_ready = hub.WaitFor(b, "Ready", "False");
    hub.WaitFor(b, "Unreachable", "True", "", std::chrono::seconds(kUnreachableAfter + 60));
    std::printf(
        "fleet: API server stopped → Ready=False after %.2f s, Unreachable=True after "
        "%.2f s (heartbeat %ds, unreachableAfter %ds)\n",
        Seconds(not_ready), Seconds(Clock::now() - stopped), kHeartbeat, kUnreachableAfter);
    CHECK(hub.Condition(a, "Ready").value("status", "") == "True");
    CHECK(hub.Condition(a, "Unreachable").value("status", "") == "False");
    CHECK_FALSE((*fleet)->capacity().Snapshot().cluster(b)->info().reachable);
    REQUIRE(restart.get().ok());
    const auto answered = Clock::now();
    hub.WaitFor(b, "Ready", "True");
    std::printf("fleet: API server healthy again → Ready=True after %.2f s\n",
                Seconds(Clock::now() - answered));
    CHECK(hub.Condition(b, "Unreachable").value("status", "") == "False");
    CHECK((*fleet)->capacity().Snapshot().cluster(b)->info().reachable);
  }

  stop = true;
  CHECK(run.get().ok());
  for (const std::string& name : {a, b, bad, tls, missing}) {
    CHECK(hub.client.Delete(api::v1alpha1::kMemberClusters, "", name).ok());
  }
  CHECK(hub.client.Delete(kube::resources::kNamespaces, "", hub.ns).ok());
}

}  // namespace
}  // namespace kiln::fleet
