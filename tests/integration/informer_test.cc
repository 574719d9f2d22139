// Informer and watch tests that disturb their control plane (churn of
// thousands of objects, apiserver restarts, etcd compaction). They run on the
// kiln_disruption fixture, one at a time.
#include "kube/informer.h"

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "kube/api_error.h"
#include "kube/kubeconfig.h"
#include "tests/support/local_clusters.h"

namespace kiln::kube {
namespace {

using kiln::testing::LocalClusters;
using kiln::testing::UniqueName;
using std::chrono::seconds;

// What the handlers saw, checked against the server: every change exactly once.
class Mirror {
 public:
  EventHandlers Handlers() {
    return {
        .on_add =
            [this](const Object& o) {
              std::lock_guard<std::mutex> lock(mu_);
              std::string key = Store::KeyOf(*o);
              if (rv_.count(key) != 0) violations_.push_back("add of known " + key);
              rv_[key] = Rv(*o);
              ++adds_;
            },
        .on_update =
            [this](const Object& old, const Object& now) {
              std::lock_guard<std::mutex> lock(mu_);
              std::string key = Store::KeyOf(*now);
              auto it = rv_.find(key);
              if (it == rv_.end()) {
                violations_.push_back("update of unknown " + key);
              } else if (Rv(*now) <= it->second || Rv(*old) != it->second) {
                violations_.push_back("update of " + key + " not after the last seen version");
              }
              rv_[key] = Rv(*now);
              ++updates_;
            },
        .on_delete =
            [this](const Object& o) {
              std::lock_guard<std::mutex> lock(mu_);
              if (rv_.erase(Store::KeyOf(*o)) == 0) {
                violations_.push_back("delete of unknown " + Store::KeyOf(*o));
              }
              ++deletes_;
            },
    };
  }

  // True when the mirror holds exactly the server's objects at their versions.
  bool Matches(Client& client, const std::string& ns, const std::string& selector,
               std::string& diff) {
    auto list = client.ListAll(resources::kConfigMaps, ns, {.label_selector = selector});
    if (!list.ok()) {
      diff = list.status().ToString();
      return false;
    }
    std::map<std::string, long long> server;
    for (const auto& item : (*list)["items"]) server[Store::KeyOf(item)] = Rv(item);
    std::lock_guard<std::mutex> lock(mu_);
    diff = std::to_string(server.size()) + " on the server, " + std::to_string(rv_.size()) +
           " mirrored";
    return server == rv_;
  }

  int adds() { return Locked(adds_); }
  int updates() { return Locked(updates_); }
  int deletes() { return Locked(deletes_); }
  std::vector<std::string> violations() {
    std::lock_guard<std::mutex> lock(mu_);
    return violations_;
  }

 private:
  static long long Rv(const json& o) {
    return std::stoll(o["metadata"]["resourceVersion"].get<std::string>());
  }
  int Locked(const int& v) {
    std::lock_guard<std::mutex> lock(mu_);
    return v;
  }

  std::mutex mu_;
  std::map<std::string, long long> rv_;
  int adds_ = 0, updates_ = 0, deletes_ = 0;
  std::vector<std::string> violations_;
};

// Stops `informer` and checks the handlers saw exactly these changes, each once.
void ExpectExactly(Informer& informer, Mirror& mirror, int adds, int updates, int deletes) {
  informer.Stop();
  CHECK(mirror.violations().empty());
  CHECK(mirror.adds() == adds);
  CHECK(mirror.updates() == updates);
  CHECK(mirror.deletes() == deletes);
}

struct Env {
  Env() {
    auto lc = LocalClusters::FromEnvironment();
    if (!lc.ok()) FAIL(lc.status().ToString());
    clusters = std::make_unique<LocalClusters>(std::move(*lc));
    auto cfg = LoadKubeconfig(cluster().kubeconfig);
    REQUIRE(cfg.ok());
    // Unlimited QPS: the tests write thousands of objects.
    auto c = Client::New(*cfg, {.qps = 0});
    REQUIRE(c.ok());
    client = std::move(*c);
    ns = UniqueName("kiln-informer");
    REQUIRE(client->Create(resources::kNamespaces, "", {{"metadata", {{"name", ns}}}}).ok());
  }
  ~Env() { (void)client->Delete(resources::kNamespaces, "", ns); }
  const testing::LocalCluster& cluster() const { return clusters->clusters()[0]; }

  json ConfigMap(const std::string& name, const std::string& value) const {
    return {{"metadata", {{"name", name}, {"namespace", ns}, {"labels", {{"set", "churn"}}}}},
            {"data", {{"v", value}}}};
  }

  // Creates PREFIX-0 .. PREFIX-(n-1), all in the "churn" set.
  void CreateMany(const std::string& prefix, int n) {
    for (int i = 0; i < n; ++i) {
      REQUIRE(client->Create(resources::kConfigMaps, ns, ConfigMap(prefix + std::to_string(i), "0"))
                  .ok());
    }
  }

  // Compacts etcd at its current revision, so older resourceVersions are gone.
  void CompactEtcd() {
    auto status = clusters->Etcdctl(cluster(), {"endpoint", "status", "-w", "json"});
    REQUIRE(status.ok());
    REQUIRE(status->exit_code == 0);
    auto rev = json::parse(status->stdout_data)[0]["Status"]["header"]["revision"].get<long long>();
    auto compact = clusters->Etcdctl(cluster(), {"compact", std::to_string(rev)});
    REQUIRE(compact.ok());
    REQUIRE(compact->exit_code == 0);
  }

  void WaitConsistent(Mirror& mirror, Informer& informer) {
    auto deadline = std::chrono::steady_clock::now() + seconds(180);
    std::string diff;
    while (!mirror.Matches(*client, ns, "set=churn", diff) ||
           informer.store().size() != static_cast<size_t>(mirror.adds() - mirror.deletes())) {
      if (std::chrono::steady_clock::now() > deadline) {
        FAIL("informer never caught up: " << diff << "; last error " << informer.last_error());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  std::unique_ptr<LocalClusters> clusters;
  std::unique_ptr<Client> client;
  std::string ns;
};

// Runs fn(i) for i in [0, n) on `threads` threads; returns the first error.
Status Parallel(int n, int threads, const std::function<Status(int)>& fn) {
  std::mutex mu;
  Status first;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = t; i < n; i += threads) {
        Status s = fn(i);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first.ok()) first = s;
          return;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return first;
}

TEST_CASE("an informer stays exactly consistent under churn of 5,000 objects",
          "[integration][informer]") {
  Env env;
  Mirror mirror;
  Informer informer(*env.client, resources::kConfigMaps,
                    {.ns = env.ns, .label_selector = "set=churn"});
  informer.AddHandlers(mirror.Handlers());
  informer.Start();
  REQUIRE(informer.WaitForSync(std::chrono::minutes(1)));

  constexpr int kObjects = 5000, kUpdates = 2000, kDeletes = 1000;
  Client& c = *env.client;
  REQUIRE(Parallel(kObjects, 4, [&](int i) {
            return c
                .Create(resources::kConfigMaps, env.ns,
                        env.ConfigMap("cm-" + std::to_string(i), "0"))
                .status();
          }).ok());
  REQUIRE(Parallel(kUpdates, 4, [&](int i) {
            return c
                .Patch(resources::kConfigMaps, env.ns, "cm-" + std::to_string(i * 2),
                       PatchType::kMerge, R"({"data":{"v":"1"}})")
                .status();
          }).ok());
  REQUIRE(
      Parallel(kDeletes, 4, [&](int i) {
        return c.Delete(resources::kConfigMaps, env.ns, "cm-" + std::to_string(i * 5 + 1)).status();
      }).ok());

  env.WaitConsistent(mirror, informer);
  ExpectExactly(informer, mirror, kObjects, kUpdates, kDeletes);
  CHECK(informer.store().size() == kObjects - kDeletes);
  CHECK(informer.store().ByIndex(kIndexLabel, "set=churn").size() == kObjects - kDeletes);
  // Cached objects drop managedFields.
  CHECK_FALSE((*informer.store().List().at(0))["metadata"].contains("managedFields"));
}

TEST_CASE("the watch survives an apiserver restart", "[integration][informer]") {
  Env env;
  Client& c = *env.client;
  env.CreateMany("r-", 20);
  Mirror mirror;
  Informer informer(c, resources::kConfigMaps, {.ns = env.ns, .label_selector = "set=churn"});
  informer.AddHandlers(mirror.Handlers());
  informer.Start();
  REQUIRE(informer.WaitForSync(std::chrono::minutes(1)));

  REQUIRE(env.clusters->Restart(env.cluster(), "kube-apiserver", 2).ok());
  for (int i = 0; i < 10; ++i) {
    REQUIRE(c.Patch(resources::kConfigMaps, env.ns, "r-" + std::to_string(i), PatchType::kMerge,
                    R"({"data":{"v":"after-restart"}})")
                .ok());
  }
  REQUIRE(c.Delete(resources::kConfigMaps, env.ns, "r-19").ok());
  REQUIRE(c.Create(resources::kConfigMaps, env.ns, env.ConfigMap("r-new", "0")).ok());

  env.WaitConsistent(mirror, informer);
  CHECK(informer.stats().watch_restarts >= 1);
  ExpectExactly(informer, mirror, 21, 10, 1);
}

TEST_CASE("a compacted resourceVersion (410) leads to a re-list with no lost or duplicated events",
          "[integration][informer]") {
  Env env;
  Client& c = *env.client;
  env.CreateMany("g-", 30);
  Mirror mirror;
  // Without bookmarks the informer's resourceVersion only moves with its own
  // objects, so the writes below leave it behind the compaction point.
  Informer informer(c, resources::kConfigMaps,
                    {.ns = env.ns, .label_selector = "set=churn", .allow_bookmarks = false});
  informer.AddHandlers(mirror.Handlers());
  informer.Start();
  REQUIRE(informer.WaitForSync(std::chrono::minutes(1)));

  // Advance etcd past the informer's version with objects it does not watch,
  // compact away the history, and make the apiserver forget its cache.
  for (int i = 0; i < 50; ++i) {
    json other = {{"metadata", {{"name", "other-" + std::to_string(i)}, {"namespace", env.ns}}}};
    REQUIRE(c.Create(resources::kConfigMaps, env.ns, other).ok());
  }
  env.CompactEtcd();

  REQUIRE(env.clusters->Restart(env.cluster(), "kube-apiserver", 3).ok());
  for (int i = 0; i < 5; ++i) {
    REQUIRE(c.Patch(resources::kConfigMaps, env.ns, "g-" + std::to_string(i), PatchType::kMerge,
                    R"({"data":{"v":"after-compaction"}})")
                .ok());
  }
  REQUIRE(c.Delete(resources::kConfigMaps, env.ns, "g-29").ok());

  env.WaitConsistent(mirror, informer);
  CHECK(informer.stats().relists_after_expiry >= 1);
  ExpectExactly(informer, mirror, 30, 5, 1);
}

TEST_CASE("a watch from a compacted version is refused with 410 Expired",
          "[integration][informer]") {
  Env env;
  Client& c = *env.client;
  auto list = c.List(resources::kConfigMaps, env.ns);
  REQUIRE(list.ok());
  std::string old_rv = (*list)["metadata"]["resourceVersion"];
  env.CreateMany("w-", 20);
  env.CompactEtcd();
  REQUIRE(env.clusters->Restart(env.cluster(), "kube-apiserver", 0).ok());

  std::atomic<bool> cancel{false};
  int events = 0;
  Status s = WatchOnce(
      c, resources::kConfigMaps, env.ns, {.resource_version = old_rv, .timeout_seconds = 10},
      [&](WatchEvent&) { return ++events, true; }, &cancel);
  INFO(s);
  CHECK(IsResourceExpired(s));
  CHECK(events == 0);
}

}  // namespace
}  // namespace kiln::kube
