// The MemberCluster controller against real clusters (fixture kiln_fleet:
// three clusters of its own, since one of them is stopped mid-test). The
// first cluster is the hub (CRDs, MemberClusters, kubeconfig Secrets) and
// also a member; another is a member whose API server is stopped and
// restarted. With the TrainingJob controller beside it, a gang on the lost
// member is placed again on the others, and what it left there is deleted
// once the member answers. Prints how long each transition took.
#include "operator/fleet/fleet.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/base64.h"
#include "base/file.h"
#include "kube/api_error.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/trainingjob/reconciler.h"
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
  void PutCluster(const std::string& name, const std::string& secret, int priority = 0) {
    json mc = {{"apiVersion", "kiln.dev/v1alpha1"},
               {"kind", "MemberCluster"},
               {"metadata", {{"name", name}}},
               {"spec",
                {{"kubeconfigSecretRef", {{"name", secret}, {"namespace", ns}}},
                 {"heartbeatInterval", std::to_string(kHeartbeat) + "s"},
                 {"unreachableAfter", std::to_string(kUnreachableAfter) + "s"},
                 {"priority", priority}}}};
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

// Applies kiln's CRD `plural` to `cluster` and waits until it is served.
void ApplyCrd(const testing::LocalClusters& lc, const testing::LocalCluster& cluster,
              const std::string& plural) {
  const Status applied =
      lc.ApplyCrd(cluster, std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_" + plural + ".yaml",
                  plural + ".kiln.dev");
  INFO(applied.ToString());
  REQUIRE(applied.ok());
}

TEST_CASE("member clusters are connected, reported, lost and found again", "[integration][fleet]") {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // The figures appear as they are measured.
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  REQUIRE(lc->clusters().size() >= 2);
  const testing::LocalCluster& hub_cluster = lc->clusters()[0];
  const testing::LocalCluster& member_cluster = lc->clusters()[1];
  auto hub_client = lc->Client(hub_cluster);
  REQUIRE(hub_client.ok());
  ApplyCrd(*lc, hub_cluster, "memberclusters");

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
    // A failing member's status is not rewritten while nothing changes,
    // once it has settled: Unreachable=True comes unreachableAfter after
    // the first failed heartbeat (a run that got here sooner saw that
    // change inside its window).
    hub.WaitFor(missing, "Unreachable", "True");
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

// A gang of `replicas` workers × 8 GPUs: by default 2, one whole cluster of
// the fixture (2 nodes of 8 GPUs each).
json Gang(const std::string& ns, const std::string& name, int replicas = 2) {
  return {
      {"apiVersion", "kiln.dev/v1alpha1"},
      {"kind", "TrainingJob"},
      {"metadata", {{"name", name}, {"namespace", ns}}},
      {"spec",
       {{"model",
         {{"architecture", "gpt"},
          {"layers", 2},
          {"hiddenSize", 64},
          {"heads", 4},
          {"vocabSize", 257},
          {"contextLength", 64}}},
        {"data", {{"uri", "file:///usr/share/games/fortunes"}}},
        {"training",
         {{"steps", 100}, {"globalBatchSize", 16}, {"microBatchSize", 8}, {"sequenceLength", 64}}},
        {"workers",
         {{"replicas", replicas},
          {"gpusPerWorker", 8},
          {"image", "ghcr.io/kiln-dev/kiln-worker:0.1.0"}}},
        {"checkpoint", {{"uri", "file:///kiln/" + name}}},
        {"failurePolicy", {{"maxRestarts", 3}, {"backoff", {{"initial", "1s"}}}}}}}};
}

TEST_CASE("a lost member's gang is placed again on the others, and the member swept on return",
          "[integration][fleet][trainingjob]") {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  REQUIRE(lc->clusters().size() >= 3);
  const testing::LocalCluster& hub_cluster = lc->clusters()[0];
  const testing::LocalCluster& lost_cluster = lc->clusters()[2];
  auto hub_client = lc->Client(hub_cluster);
  REQUIRE(hub_client.ok());
  ApplyCrd(*lc, hub_cluster, "memberclusters");
  ApplyCrd(*lc, hub_cluster, "trainingjobs");
  Hub hub{**hub_client, testing::UniqueName("kiln-loss")};
  REQUIRE(
      hub.client.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", hub.ns}}}}).ok());
  // One MemberCluster per cluster; the one to be lost has the highest
  // priority, so the gang goes there first.
  const std::string prefix = testing::UniqueName("loss");
  std::vector<std::string> members;
  std::vector<std::unique_ptr<kube::Client>> clients;
  for (size_t i = 0; i < 3; ++i) {
    auto config = ReadFile(lc->clusters()[i].kubeconfig);
    REQUIRE(config.ok());
    const std::string secret = "c" + std::to_string(i);
    hub.PutSecret(secret, *config);
    members.push_back(prefix + "-" + std::to_string(i));
    hub.PutCluster(members.back(), secret, i == 2 ? 10 : 0);
    auto client = lc->Client(lc->clusters()[i]);
    REQUIRE(client.ok());
    clients.push_back(std::move(*client));
  }
  const std::string& lost = members[2];

  runtime::Manager manager(hub.client,
                           {.metrics_bind_address = "0", .health_probe_bind_address = "0"});
  auto fleet = Fleet::Register(manager, hub.client, {.secret_namespace = hub.ns});
  REQUIRE(fleet.ok());
  Fleet& f = **fleet;
  auto jobs = manager.GetInformer(hub.client, api::v1alpha1::kTrainingJobs, {.ns = hub.ns});
  REQUIRE(jobs.ok());
  trainingjob::TrainingJobReconciler reconciler(
      hub.client, f.members(), f.capacity(), &manager.events(),
      {.volume = {.claim_name = "", .host_path = "/tmp", .mount_path = "/kiln"},
       .resync = std::chrono::milliseconds(500)});
  runtime::Controller& controller =
      manager.AddController("trainingjob", reconciler, {.workers = 2});
  controller.For(**jobs);
  f.OnMemberPod([&controller](const std::string&, const json& pod) {
    if (auto job = trainingjob::JobOfWorker(pod)) controller.queue().Add(job->Key());
  });
  std::atomic<bool> stop{false};
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });
  struct StopOnExit {
    std::atomic<bool>& stop;
    ~StopOnExit() { stop = true; }
  } stop_on_exit{stop};

  const int64_t gpus = int64_t{lc->nodes_per_cluster()} * lc->gpus_per_node();
  REQUIRE(gpus == 16);  // Gang() fills one cluster.
  for (const std::string& m : members) {
    hub.WaitFor(m, "Ready", "True");
    auto start = Clock::now();
    while (Clock::now() - start < std::chrono::seconds(60)) {
      auto c = f.capacity().Snapshot().cluster(m);
      if (c != nullptr && c->free_gpus() == gpus) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(f.capacity().Snapshot().cluster(m)->free_gpus() == gpus);
  }

  auto status = [&](const std::string& name) {
    auto j = hub.client.Get(api::v1alpha1::kTrainingJobs, hub.ns, name);
    return j.ok() ? j->value("status", json::object()) : json::object();
  };
  // The job's pods in cluster `i` (attempt `attempt`, or all); Running ones only when asked.
  auto pods = [&](size_t i, const std::string& name, const std::string& attempt, bool running) {
    std::string selector = std::string(trainingjob::kJobNameLabel) + "=" + name;
    if (!attempt.empty()) selector += "," + std::string(trainingjob::kAttemptLabel) + "=" + attempt;
    auto list = clients[i]->List(kube::resources::kPods, hub.ns, {.label_selector = selector});
    int n = 0;
    if (!list.ok()) return -1;
    for (const auto& p : (*list)["items"]) {
      n += !running || p["status"].value("phase", "") == "Running" ? 1 : 0;
    }
    return n;
  };
  // Polls `done` (bounded); the time it took.
  auto wait = [](const std::string& what, auto done, std::chrono::seconds limit) {
    const auto start = Clock::now();
    while (Clock::now() - start < limit) {
      if (done()) return Clock::now() - start;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL("timed out waiting for " << what);
    return Clock::now() - start;
  };

  REQUIRE(hub.client.Create(api::v1alpha1::kTrainingJobs, hub.ns, Gang(hub.ns, "gang")).ok());
  wait(
      "the gang running on the priority member",
      [&] {
        return pods(2, "gang", "0", true) == 2 && status("gang").value("phase", "") == "Running";
      },
      std::chrono::seconds(90));
  REQUIRE(status("gang")["placement"][0]["cluster"] == lost);

  // The lost member's API server stops for long enough to be declared
  // Unreachable and for the gang to move; then it comes back.
  const double down_seconds = kUnreachableAfter + 2 * kHeartbeat + 25;
  const auto stopped = Clock::now();
  auto restart = std::async(std::launch::async, [&] {
    return lc->Restart(lost_cluster, "kube-apiserver", down_seconds);
  });
  const auto limit = std::chrono::seconds(kUnreachableAfter + 2 * kHeartbeat + 20);
  wait(
      "the restart", [&] { return status("gang").value("restarts", 0) == 1; }, limit);
  const auto restarted = Clock::now() - stopped;
  const json s = status("gang");
  INFO(s.dump());
  CHECK(s["restartHistory"][0]["reason"] == "ClusterUnavailable");
  CHECK(s["restartHistory"][0]["cluster"] == lost);
  size_t moved_to = 3;
  wait(
      "the gang's pods created elsewhere",
      [&] {
        for (size_t i = 0; i < 2; ++i) {
          if (pods(i, "gang", "1", false) == 2) moved_to = i;
        }
        return moved_to < 2;
      },
      std::chrono::seconds(30));
  const auto created = Clock::now() - stopped;
  wait(
      "the moved gang running",
      [&] {
        return pods(moved_to, "gang", "1", true) == 2 &&
               status("gang").value("phase", "") == "Running";
      },
      std::chrono::seconds(30));
  const auto running = Clock::now() - stopped;
  CHECK(status("gang")["placement"][0]["cluster"] == members[moved_to]);
  std::printf(
      "cluster loss: %s's API server stopped → gang restarted (ClusterUnavailable) after %.2f s, "
      "its pods created in %s after %.2f s, Running after %.2f s (heartbeat %ds, "
      "unreachableAfter %ds)\n",
      lost.c_str(), Seconds(restarted), members[moved_to].c_str(), Seconds(created),
      Seconds(running), kHeartbeat, kUnreachableAfter);
  // While it is away, its pods are left alone (nothing can reach them).
  CHECK(f.capacity().Snapshot().cluster(lost)->info().reachable == false);

  // Back: Ready again, attempt 0's pods deleted there, the gang untouched.
  REQUIRE(restart.get().ok());
  const auto answered = Clock::now();
  hub.WaitFor(lost, "Ready", "True");
  wait(
      "the lost member swept", [&] { return pods(2, "gang", "", false) == 0; },
      std::chrono::seconds(60));
  std::printf(
      "cluster loss: %s answers again → Ready and attempt 0's pods deleted there after %.2f s\n",
      lost.c_str(), Seconds(Clock::now() - answered));
  CHECK(pods(moved_to, "gang", "1", true) == 2);
  CHECK(status("gang").value("restarts", 0) == 1);

  // And back: its GPUs are free again and its nodes take work (while the
  // API server was down for long, its node controller may have marked them
  // NotReady and tainted them until their heartbeats are seen again), and a
  // new gang goes there first.
  wait(
      "the member's GPUs free and its nodes untainted",
      [&] {
        const placement::Snapshot fleet_now = f.capacity().Snapshot();
        const auto* c = fleet_now.cluster(lost);
        if (c == nullptr || c->free_gpus() != gpus) return false;
        for (const auto& [name, slot] : c->nodes()) {
          if (!c->node(slot).TakesWork() || !c->node(slot).taints.empty()) return false;
        }
        return true;
      },
      std::chrono::seconds(120));
  REQUIRE(hub.client.Create(api::v1alpha1::kTrainingJobs, hub.ns, Gang(hub.ns, "again")).ok());
  wait(
      "the new gang placed", [&] { return status("again").contains("placement"); },
      std::chrono::seconds(30));
  CHECK(status("again")["placement"][0]["cluster"] == lost);

  // Deleting the jobs removes their pods in every member (finalizer).
  for (const char* name : {"gang", "again"}) {
    REQUIRE(hub.client.Delete(api::v1alpha1::kTrainingJobs, hub.ns, name).ok());
  }
  wait(
      "the jobs gone",
      [&] {
        auto list = hub.client.List(api::v1alpha1::kTrainingJobs, hub.ns);
        return list.ok() && (*list)["items"].empty();
      },
      std::chrono::seconds(60));
  for (size_t i = 0; i < 3; ++i) {
    for (const char* name : {"gang", "again"}) CHECK(pods(i, name, "", false) == 0);
  }
  stop = true;
  CHECK(run.get().ok());
  for (const std::string& m : members) {
    CHECK(hub.client.Delete(api::v1alpha1::kMemberClusters, "", m).ok());
  }
  for (size_t i = 0; i < 3; ++i) {
    auto gone = clients[i]->Delete(kube::resources::kNamespaces, "", hub.ns);
    CHECK((gone.ok() || kube::IsNotFound(gone.status())));
  }
}

// Issue 13's collision: gangs submitted in the same instant, on capacity
// that holds them all only if no two count the same free GPUs. Every
// decision holds its nodes in the capacity view until its pods are bound,
// so every pod of every gang is bound by the members' own kube-schedulers.
TEST_CASE("gangs submitted at once are all bound when their placements do not collide",
          "[integration][fleet][trainingjob][holds]") {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  REQUIRE(lc->clusters().size() >= 3);
  const testing::LocalCluster& hub_cluster = lc->clusters()[0];
  auto hub_client = lc->Client(hub_cluster);
  REQUIRE(hub_client.ok());
  ApplyCrd(*lc, hub_cluster, "memberclusters");
  ApplyCrd(*lc, hub_cluster, "trainingjobs");
  Hub hub{**hub_client, testing::UniqueName("kiln-burst")};
  REQUIRE(
      hub.client.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", hub.ns}}}}).ok());
  const std::string prefix = testing::UniqueName("burst");
  std::vector<std::string> members;
  std::vector<std::unique_ptr<kube::Client>> clients;
  for (size_t i = 0; i < 3; ++i) {
    auto config = ReadFile(lc->clusters()[i].kubeconfig);
    REQUIRE(config.ok());
    const std::string secret = "c" + std::to_string(i);
    hub.PutSecret(secret, *config);
    members.push_back(prefix + "-" + std::to_string(i));
    hub.PutCluster(members.back(), secret);
    auto client = lc->Client(lc->clusters()[i]);
    REQUIRE(client.ok());
    clients.push_back(std::move(*client));
  }

  runtime::Manager manager(hub.client,
                           {.metrics_bind_address = "0", .health_probe_bind_address = "0"});
  auto fleet = Fleet::Register(manager, hub.client, {.secret_namespace = hub.ns});
  REQUIRE(fleet.ok());
  Fleet& f = **fleet;
  auto jobs = manager.GetInformer(hub.client, api::v1alpha1::kTrainingJobs, {.ns = hub.ns});
  REQUIRE(jobs.ok());
  trainingjob::TrainingJobReconciler reconciler(
      hub.client, f.members(), f.capacity(), &manager.events(),
      {.volume = {.claim_name = "", .host_path = "/tmp", .mount_path = "/kiln"},
       .resync = std::chrono::milliseconds(500)});
  // kiln-operator's 4 workers: decisions are made in parallel.
  runtime::Controller& controller =
      manager.AddController("trainingjob", reconciler, {.workers = 4});
  controller.For(**jobs);
  f.OnMemberPod([&controller](const std::string&, const json& pod) {
    if (auto job = trainingjob::JobOfWorker(pod)) controller.queue().Add(job->Key());
  });
  std::atomic<bool> stop{false};
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });
  struct StopOnExit {
    std::atomic<bool>& stop;
    ~StopOnExit() { stop = true; }
  } stop_on_exit{stop};

  const int64_t gpus = int64_t{lc->nodes_per_cluster()} * lc->gpus_per_node();
  REQUIRE(gpus == 16);
  for (const std::string& m : members) {
    hub.WaitFor(m, "Ready", "True");
    const auto start = Clock::now();
    while (Clock::now() - start < std::chrono::seconds(60)) {
      auto c = f.capacity().Snapshot().cluster(m);
      if (c != nullptr && c->free_gpus() == gpus) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(f.capacity().Snapshot().cluster(m)->free_gpus() == gpus);
  }

  // 48 GPUs in all, asked for by two gangs of 2 × 8 (a whole cluster each)
  // and two of 1 × 8, created by four threads at once. Without holds, each
  // decision sees the fleet empty and BinPack sends them all to the same
  // first nodes.
  const std::vector<std::pair<std::string, int>> gangs = {
      {"pair-a", 2}, {"one-a", 1}, {"pair-b", 2}, {"one-b", 1}};
  const auto submitted = Clock::now();
  {
    std::vector<std::future<Status>> creates;
    for (const auto& [name, replicas] : gangs) {
      creates.push_back(std::async(std::launch::async, [&, name = name, replicas = replicas] {
        return hub.client.Create(api::v1alpha1::kTrainingJobs, hub.ns, Gang(hub.ns, name, replicas))
            .status();
      }));
    }
    for (auto& c : creates) REQUIRE(c.get().ok());
  }

  // Every pod of every gang bound (spec.nodeName, set by kube-scheduler:
  // kiln pins by node affinity only) and running, in some member.
  struct Bound {
    int pods = 0;
    int bound = 0;
    std::vector<std::string> nodes;  // "cluster/node" of each bound pod
  };
  auto bound_of = [&](const std::string& name) {
    Bound b;
    for (size_t i = 0; i < clients.size(); ++i) {
      auto list = clients[i]->List(
          kube::resources::kPods, hub.ns,
          {.label_selector = std::string(trainingjob::kJobNameLabel) + "=" + name});
      if (!list.ok()) continue;
      for (const auto& p : (*list)["items"]) {
        ++b.pods;
        const std::string node = p["spec"].value("nodeName", "");
        if (!node.empty() && p["status"].value("phase", "") == "Running") {
          ++b.bound;
          b.nodes.push_back(members[i] + "/" + node);
        }
      }
    }
    return b;
  };
  auto all_bound = [&] {
    for (const auto& [name, replicas] : gangs) {
      const Bound b = bound_of(name);
      if (b.pods != replicas || b.bound != replicas) return false;
    }
    return true;
  };
  const auto limit = std::chrono::seconds(120);
  while (Clock::now() - submitted < limit && !all_bound()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::map<std::string, std::string> used_by;  // "cluster/node" → gang
  for (const auto& [name, replicas] : gangs) {
    const Bound b = bound_of(name);
    auto s = hub.client.Get(api::v1alpha1::kTrainingJobs, hub.ns, name);
    INFO(name << ": " << (s.ok() ? s->value("status", json::object()).dump() : "?"));
    CHECK(b.pods == replicas);
    CHECK(b.bound == replicas);
    for (const std::string& node : b.nodes) {
      INFO(node << " also runs " << used_by[node]);
      CHECK(used_by[node].empty());  // 8 GPUs a node: one worker each.
      used_by[node] = name;
    }
  }
  std::printf("holds: %zu gangs submitted at once → %s after %.2f s\n", gangs.size(),
              all_bound() ? "every pod bound" : "NOT every pod bound",
              Seconds(Clock::now() - submitted));
  // Bound and counted: every hold is spent, and the fleet is full.
  for (const std::string& m : members) {
    const auto start = Clock::now();
    while (Clock::now() - start < std::chrono::seconds(30) &&
           f.capacity().Snapshot().cluster(m)->free_gpus() != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(f.capacity().Snapshot().cluster(m)->free_gpus() == 0);
  }
  for (const auto& [name, replicas] : gangs) {
    CHECK(f.capacity().HeldRanks(hub.ns + "/" + name).empty());
  }

  for (const auto& [name, replicas] : gangs) {
    REQUIRE(hub.client.Delete(api::v1alpha1::kTrainingJobs, hub.ns, name).ok());
  }
  const auto deleted = Clock::now();
  while (Clock::now() - deleted < std::chrono::seconds(60)) {
    auto list = hub.client.List(api::v1alpha1::kTrainingJobs, hub.ns);
    if (list.ok() && (*list)["items"].empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  for (const auto& [name, replicas] : gangs) CHECK(bound_of(name).pods == 0);
  stop = true;
  CHECK(run.get().ok());
  for (const std::string& m : members) {
    CHECK(hub.client.Delete(api::v1alpha1::kMemberClusters, "", m).ok());
  }
  for (size_t i = 0; i < 3; ++i) {
    auto gone = clients[i]->Delete(kube::resources::kNamespaces, "", hub.ns);
    CHECK((gone.ok() || kube::IsNotFound(gone.status())));
  }
}

}  // namespace
}  // namespace kiln::fleet
