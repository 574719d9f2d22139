#include "operator/fleet/membercluster_reconciler.h"

#include <map>
#include <mutex>
#include <vector>

#include <catch2/catch.hpp>

#include "base/base64.h"
#include "base/time_format.h"
#include "kube/api_error.h"
#include "runtime/fake_reader.h"
#include "tests/operator/fleet/test_objects.h"
#include "tests/support/fake_clock.h"

namespace kiln::fleet {
namespace {

using kube::json;
using std::chrono::seconds;

// A Member whose heartbeat answers what the test says; connecting it feeds
// two 8-GPU nodes into the view, as its informers would.
class FakeMember final : public Member {
 public:
  explicit FakeMember(std::string name) : name_(std::move(name)) {}
  const std::string& name() const override { return name_; }
  kube::Client& client() override {
    FAIL("client() is not used here");
    throw 0;
  }
  const runtime::Reader& nodes() const override { return empty_; }
  const runtime::Reader& pods() const override { return empty_; }
  Status Probe(std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++probes;
    return answer;
  }
  std::string version() const override { return "v1.33.13"; }
  Status CachesSynced() const override { return Status::Ok(); }
  void Stop() override { stopped = true; }

  std::mutex mu_;
  Status answer;
  int probes = 0;
  bool stopped = false;

 private:
  std::string name_;
  runtime::FakeReader empty_;
};

class FakeConnector final : public Connector {
 public:
  explicit FakeConnector(CapacityView& view) : view_(view) {}
  StatusOr<std::shared_ptr<Member>> Connect(const std::string& name,
                                            const kube::RestConfig& config) override {
    servers.push_back(config.server);
    auto m = std::make_shared<FakeMember>(name);
    m->answer = first_answer;
    made[name].push_back(m);
    view_.OnNode(name, testing::GpuNode(name + "-gpu-0", "z-a", "r-0", "nvl-0"));
    view_.OnNode(name, testing::GpuNode(name + "-gpu-1", "z-a", "r-0", "nvl-0"));
    return std::shared_ptr<Member>(m);
  }
  FakeMember& last(const std::string& name) { return *made[name].back(); }

  std::vector<std::string> servers;
  std::map<std::string, std::vector<std::shared_ptr<FakeMember>>> made;
  Status first_answer;  // What a new member's heartbeats answer.

 private:
  CapacityView& view_;
};

// Writes status back into the reader, as the API server and the informer would.
class FakeStatusWriter final : public StatusWriter {
 public:
  explicit FakeStatusWriter(runtime::FakeReader& clusters) : clusters_(clusters) {}
  Status Write(const json& cluster, const json& status) override {
    ++writes;
    json updated = cluster;
    updated["status"] = status;
    clusters_.Put(updated);
    return Status::Ok();
  }
  int writes = 0;

 private:
  runtime::FakeReader& clusters_;
};

struct RecordedEvent {
  std::string object, reason, message;
  runtime::EventType type;
};

std::string Kubeconfig(const std::string& server, const std::string& token = "t0ken") {
  return "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
         "clusters: [{name: c, cluster: {server: '" +
         server + "', insecure-skip-tls-verify: true}}]\n" +
         "users: [{name: u, user: {token: " + token + "}}]\n" +
         "contexts: [{name: c, context: {cluster: c, user: u}}]\n";
}

json Secret(const std::string& name, const std::string& kubeconfig,
            const std::string& key = "kubeconfig") {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"name", name}, {"namespace", "kiln-system"}}},
          {"data", {{key, Base64Encode(kubeconfig)}}}};
}

json Cluster(const std::string& name, const std::string& secret) {
  return {{"apiVersion", "kiln.dev/v1alpha1"},
          {"kind", "MemberCluster"},
          {"metadata", {{"name", name}, {"generation", 3}}},
          {"spec",
           {{"kubeconfigSecretRef", {{"name", secret}, {"namespace", "kiln-system"}}},
            {"heartbeatInterval", "10s"},
            {"unreachableAfter", "40s"}}}};
}

struct Env {
  // `local`: the operator's own configuration, for spec.local members.
  explicit Env(std::optional<kube::RestConfig> local = std::nullopt)
      : local_config(std::move(local)) {}

  std::optional<kube::RestConfig> local_config;
  kiln::testing::FakeClock clock;
  runtime::FakeReader clusters, secrets;
  CapacityView view;
  Members members;
  FakeConnector connector{view};
  FakeStatusWriter writer{clusters};
  std::vector<RecordedEvent> events;
  MemberClusterReconciler reconciler{
      clusters,
      secrets,
      connector,
      members,
      view,
      writer,
      [this](const json& o, runtime::EventType t, const std::string& r, const std::string& m) {
        events.push_back({o["metadata"].value("name", ""), r, m, t});
      },
      {.secret_namespace = "kiln-system",
       .local_config = local_config,
       .clock = &clock,
       .wall_clock = [this] { return Wall(); }}};
  std::stop_source stop;

  // The wall clock the reconciler sees: the fake clock, moved to our era.
  std::chrono::system_clock::time_point Wall() {
    return std::chrono::system_clock::time_point(
               std::chrono::duration_cast<std::chrono::system_clock::duration>(
                   clock.Now().time_since_epoch())) +
           std::chrono::hours(24 * 365 * 56);
  }

  StatusOr<runtime::Result> Reconcile(const std::string& name) {
    runtime::Context ctx(stop.get_token(), std::nullopt);
    return reconciler.Reconcile(ctx, {"", name});
  }
  json Status(const std::string& name) { return (*clusters.Get("", name).value())["status"]; }
  json Condition(const std::string& name, const std::string& type) {
    const json status = Status(name);
    for (const json& c : status["conditions"]) {
      if (c["type"] == type) return c;
    }
    return json();
  }
  bool HasEvent(const std::string& reason) {
    for (const auto& e : events) {
      if (e.reason == reason) return true;
    }
    return false;
  }
};

TEST_CASE("a member is connected, heartbeated and reported Ready with its GPUs",
          "[fleet][membercluster]") {
  Env env;
  env.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443")));
  env.clusters.Put(Cluster("west", "west"));

  auto r = env.Reconcile("west");
  REQUIRE(r.ok());
  CHECK(r->requeue_after == seconds(10));
  REQUIRE(env.members.Get("west") != nullptr);
  CHECK(env.connector.servers == std::vector<std::string>{"https://127.0.0.1:6443"});
  CHECK(env.Condition("west", "Ready")["status"] == "True");
  CHECK(env.Condition("west", "Unreachable")["status"] == "False");
  json status = env.Status("west");
  CHECK(status["observedGeneration"] == 3);
  CHECK(status["totalGPUs"] == 16);
  CHECK(status["allocatableGPUs"] == 16);
  CHECK(status["nodes"] == 2);
  CHECK(status["nodeCount"] == 2);
  CHECK(status["kubernetesVersion"] == "v1.33.13");
  CHECK(status["gpus"][0]["model"] == testing::kH100);
  CHECK(status["nvlinkDomains"][0]["name"] == "nvl-0");
  CHECK(env.HasEvent("Connected"));
  CHECK(env.view.Snapshot().cluster("west") != nullptr);

  SECTION("a reconcile between heartbeats neither probes nor writes") {
    int writes = env.writer.writes;
    env.clock.Advance(seconds(3));
    auto again = env.Reconcile("west");
    REQUIRE(again.ok());
    CHECK(again->requeue_after == seconds(7));
    CHECK(env.connector.last("west").probes == 1);
    CHECK(env.writer.writes == writes);
  }
}

TEST_CASE("a local member connects with the operator's own configuration, no Secret",
          "[fleet][membercluster]") {
  json local = Cluster("hub", "unused");
  local["spec"].erase("kubeconfigSecretRef");
  local["spec"]["local"] = true;

  Env env(kube::RestConfig{.server = "https://10.96.0.1:443"});
  env.clusters.Put(local);
  REQUIRE(env.Reconcile("hub").ok());
  REQUIRE(env.members.Get("hub") != nullptr);
  CHECK(env.connector.servers == std::vector<std::string>{"https://10.96.0.1:443"});
  CHECK(env.Condition("hub", "Ready")["status"] == "True");
  CHECK(env.Status("hub")["totalGPUs"] == 16);
  // Connected once: later reconciles keep the connection.
  env.clock.Advance(seconds(10));
  REQUIRE(env.Reconcile("hub").ok());
  CHECK(env.connector.servers.size() == 1);

  // An operator without its own configuration says so on the condition.
  Env without;
  without.clusters.Put(local);
  REQUIRE(without.Reconcile("hub").ok());
  CHECK(without.members.Get("hub") == nullptr);
  CHECK(without.Condition("hub", "Ready")["status"] == "False");
  CHECK(without.Condition("hub", "Ready")["reason"] == "LocalConfigMissing");
  CHECK(without.HasEvent("LocalConfigMissing"));
}

TEST_CASE("heartbeats failing for unreachableAfter make a member Unreachable, and back",
          "[fleet][membercluster]") {
  Env env;
  env.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443")));
  env.clusters.Put(Cluster("west", "west"));
  REQUIRE(env.Reconcile("west").ok());
  const std::string ready_since = env.Condition("west", "Ready")["lastTransitionTime"];
  FakeMember& member = env.connector.last("west");
  member.answer = Status::Unavailable("connection refused");

  env.clock.Advance(seconds(10));
  REQUIRE(env.Reconcile("west").ok());
  json ready = env.Condition("west", "Ready");
  CHECK(ready["status"] == "False");
  CHECK(ready["reason"] == "HeartbeatFailed");
  CHECK(ready["lastTransitionTime"] != ready_since);
  json unreachable = env.Condition("west", "Unreachable");
  CHECK(unreachable["status"] == "False");
  CHECK(unreachable["reason"] == "HeartbeatFailing");
  const std::string unreachable_since = unreachable["lastTransitionTime"];
  CHECK(env.view.Snapshot().cluster("west")->info().reachable);

  // 30 s after the last success: still within unreachableAfter (40 s).
  for (int i = 0; i < 2; ++i) {
    env.clock.Advance(seconds(10));
    REQUIRE(env.Reconcile("west").ok());
  }
  CHECK(env.Condition("west", "Unreachable")["status"] == "False");
  CHECK(env.Condition("west", "Unreachable")["lastTransitionTime"] == unreachable_since);
  CHECK(env.Condition("west", "Ready")["lastTransitionTime"] == ready["lastTransitionTime"]);

  env.clock.Advance(seconds(10));  // 40 s.
  REQUIRE(env.Reconcile("west").ok());
  unreachable = env.Condition("west", "Unreachable");
  CHECK(unreachable["status"] == "True");
  CHECK(unreachable["reason"] == "HeartbeatFailed");
  CHECK_THAT(unreachable["message"].get<std::string>(),
             Catch::Contains("no successful heartbeat for more than 40s") &&
                 Catch::Contains("connection refused"));
  CHECK(unreachable["lastTransitionTime"] != unreachable_since);
  CHECK(env.HasEvent("Unreachable"));
  CHECK_FALSE(env.view.Snapshot().cluster("west")->info().reachable);

  member.answer = Status::Ok();
  env.clock.Advance(seconds(10));
  REQUIRE(env.Reconcile("west").ok());
  CHECK(env.Condition("west", "Ready")["status"] == "True");
  CHECK(env.Condition("west", "Unreachable")["status"] == "False");
  CHECK(env.Condition("west", "Unreachable")["reason"] == "HeartbeatSucceeded");
  CHECK(env.HasEvent("Reachable"));
  CHECK(env.HasEvent("Ready"));
  CHECK(env.view.Snapshot().cluster("west")->info().reachable);
  CHECK(env.connector.made["west"].size() == 1);  // Never reconnected: same Secret.
}

TEST_CASE("a new leader goes on from the last heartbeat the status shows",
          "[fleet][membercluster]") {
  // The last leader saw west answer 60 s ago; it has been silent since. The
  // new leader's first failed heartbeat finds it Unreachable at once, not
  // unreachableAfter (40 s) later.
  Env env;
  env.connector.first_answer = Status::Unavailable("connection refused");
  env.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443")));
  json west = Cluster("west", "west");
  west["status"]["lastHeartbeatTime"] = FormatRfc3339(env.Wall() - seconds(60));
  env.clusters.Put(west);
  REQUIRE(env.Reconcile("west").ok());
  CHECK(env.Condition("west", "Unreachable")["status"] == "True");
  CHECK_FALSE(env.view.Snapshot().cluster("west")->info().reachable);

  // One that answered 10 s ago gets the rest of its 40 s.
  Env fresh;
  fresh.connector.first_answer = Status::Unavailable("connection refused");
  fresh.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443")));
  west["status"]["lastHeartbeatTime"] = FormatRfc3339(fresh.Wall() - seconds(10));
  fresh.clusters.Put(west);
  REQUIRE(fresh.Reconcile("west").ok());
  CHECK(fresh.Condition("west", "Unreachable")["status"] == "False");
  fresh.clock.Advance(seconds(30));
  REQUIRE(fresh.Reconcile("west").ok());
  CHECK(fresh.Condition("west", "Unreachable")["status"] == "True");
}

TEST_CASE("a changed Secret replaces the member's connection", "[fleet][membercluster]") {
  Env env;
  env.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443")));
  env.clusters.Put(Cluster("west", "west"));
  REQUIRE(env.Reconcile("west").ok());
  auto first = env.members.Get("west");

  env.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443")));  // Same data.
  REQUIRE(env.Reconcile("west").ok());
  CHECK(env.members.Get("west") == first);

  env.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443", "rotated")));
  CHECK(env.reconciler.MapSecret(std::make_shared<const json>(Secret("west", ""))).size() == 1);
  CHECK(env.reconciler.MapSecret(std::make_shared<const json>(Secret("east", ""))).empty());
  REQUIRE(env.Reconcile("west").ok());
  CHECK(env.members.Get("west") != first);
  CHECK(env.connector.made["west"].size() == 2);
  CHECK(env.connector.made["west"][0]->stopped);
  CHECK_FALSE(env.connector.made["west"][1]->stopped);
  CHECK(env.Status("west")["totalGPUs"] == 16);  // Counted once, from the new member.
}

TEST_CASE("bad input is a condition with a reason and an event, and other members keep working",
          "[fleet][membercluster]") {
  Env env;
  env.secrets.Put(Secret("good", Kubeconfig("https://127.0.0.1:6443")));
  env.clusters.Put(Cluster("good", "good"));
  REQUIRE(env.Reconcile("good").ok());

  auto reason_for = [&](const std::string& name) {
    REQUIRE(env.Reconcile(name).ok());
    CHECK(env.Condition(name, "Ready")["status"] == "False");
    CHECK(env.members.Get(name) == nullptr);
    return env.Condition(name, "Ready")["reason"].get<std::string>();
  };
  env.clusters.Put(Cluster("missing", "no-such-secret"));
  CHECK(reason_for("missing") == "SecretNotFound");
  env.secrets.Put(Secret("nokey", Kubeconfig("https://x"), "other"));
  env.clusters.Put(Cluster("nokey", "nokey"));
  CHECK(reason_for("nokey") == "SecretKeyMissing");
  env.secrets.Put(Secret("garbage", "{{{ not yaml"));
  env.clusters.Put(Cluster("garbage", "garbage"));
  CHECK(reason_for("garbage") == "InvalidKubeconfig");
  json elsewhere = Cluster("elsewhere", "good");
  elsewhere["spec"]["kubeconfigSecretRef"]["namespace"] = "default";
  env.clusters.Put(elsewhere);
  CHECK(reason_for("elsewhere") == "SecretNamespaceNotWatched");
  bool warned = false;
  for (const auto& e : env.events) {
    if (e.object == "missing" && e.reason == "SecretNotFound") {
      warned = e.type == runtime::EventType::kWarning;
    }
  }
  CHECK(warned);

  SECTION("a failing member's status is not rewritten while nothing changes") {
    const int writes = env.writer.writes;
    const size_t events = env.events.size();
    env.clock.Advance(seconds(10));
    for (const char* name : {"missing", "nokey", "garbage", "elsewhere"}) {
      REQUIRE(env.Reconcile(name).ok());
    }
    CHECK(env.writer.writes == writes);
    CHECK(env.events.size() == events);
  }

  SECTION("an expired token or a wrong CA is reported as such") {
    env.connector.last("good").answer = kube::ErrorFromResponse(
        {401, {}, R"({"kind":"Status","reason":"Unauthorized","code":401})"}, "GET");
    env.clock.Advance(seconds(10));
    REQUIRE(env.Reconcile("good").ok());
    CHECK(env.Condition("good", "Ready")["reason"] == "Unauthorized");
    env.connector.last("good").answer = Status::FailedPrecondition("certificate verify failed");
    env.clock.Advance(seconds(10));
    REQUIRE(env.Reconcile("good").ok());
    CHECK(env.Condition("good", "Ready")["reason"] == "TLSError");
  }
  SECTION("the good member stays Ready") {
    env.clock.Advance(seconds(10));
    REQUIRE(env.Reconcile("good").ok());
    CHECK(env.Condition("good", "Ready")["status"] == "True");
  }
  SECTION("a fixed Secret connects") {
    env.secrets.Put(Secret("missing", Kubeconfig("https://127.0.0.1:7443"), "kubeconfig"));
    env.clusters.Put(Cluster("missing", "missing"));
    REQUIRE(env.Reconcile("missing").ok());
    CHECK(env.Condition("missing", "Ready")["status"] == "True");
  }
  SECTION("a Secret missing for unreachableAfter makes the member Unreachable") {
    env.clock.Advance(seconds(40));
    REQUIRE(env.Reconcile("missing").ok());
    CHECK(env.Condition("missing", "Unreachable")["status"] == "True");
    CHECK(env.Condition("missing", "Unreachable")["reason"] == "SecretNotFound");
  }
}

TEST_CASE("a deleted MemberCluster's member is stopped and leaves the view",
          "[fleet][membercluster]") {
  Env env;
  env.secrets.Put(Secret("west", Kubeconfig("https://127.0.0.1:6443")));
  env.clusters.Put(Cluster("west", "west"));
  REQUIRE(env.Reconcile("west").ok());
  env.clusters.Delete("", "west");
  auto r = env.Reconcile("west");
  REQUIRE(r.ok());
  CHECK(r->requeue_after == std::chrono::milliseconds(0));
  CHECK(env.members.Get("west") == nullptr);
  CHECK(env.connector.last("west").stopped);
  CHECK(env.view.Snapshot().cluster("west") == nullptr);
}

}  // namespace
}  // namespace kiln::fleet
