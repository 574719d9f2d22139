// The real kiln-operator binary against the shared fixture's first cluster:
// two manager processes on one Lease, their health and metrics endpoints,
// failover after a crash, and a graceful SIGTERM that hands the lease over.
#include "runtime/manager.h"

#include <chrono>
#include <csignal>
#include <future>
#include <iostream>
#include <thread>

#include <catch2/catch.hpp>

#include "kube/api_error.h"
#include "kube/kubeconfig.h"
#include "runtime/cache_reader.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/local_clusters.h"
#include "tests/support/temp_dir.h"

namespace kiln::runtime {
namespace {

using kiln::testing::BackgroundProcess;
using kiln::testing::FreePort;
using kiln::testing::HttpFetch;
using kiln::testing::LocalClusters;
using kiln::testing::TempDir;
using std::chrono::steady_clock;

bool WaitFor(const BackgroundProcess& p, const std::string& text, std::chrono::seconds limit) {
  auto deadline = steady_clock::now() + limit;
  while (p.Output().find(text) == std::string::npos) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

struct Operator {
  std::unique_ptr<BackgroundProcess> process;
  std::string metrics_url, health_url;

  std::string Get(const std::string& url, const std::string& path, int* code = nullptr) const {
    auto resp = HttpFetch(url, path);
    if (!resp.ok()) return "error: " + resp.status().ToString();
    if (code != nullptr) *code = resp->status;
    return resp->body;
  }
  // Polls until `path` answers 200 (the endpoints start a moment after exec).
  int WaitHealthy(const std::string& path) const {
    int code = 0;
    for (int i = 0; i < 300 && code != 200; ++i) {
      Get(health_url, path, &code);
      if (code != 200) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return code;
  }
};

TEST_CASE("two operator processes on one Lease: one leads, failover, graceful handover",
          "[integration][manager]") {
  auto lc = LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  const auto& cluster = lc->clusters()[0];
  auto client = lc->Client(cluster);
  REQUIRE(client.ok());
  const std::string lease = kiln::testing::UniqueName("kiln-leader");
  TempDir dir;
  auto start = [&](const std::string& id) {
    Operator op;
    int metrics_port = FreePort(), health_port = FreePort();
    REQUIRE(metrics_port > 0);
    REQUIRE(health_port > 0);
    op.metrics_url = "http://127.0.0.1:" + std::to_string(metrics_port);
    op.health_url = "http://127.0.0.1:" + std::to_string(health_port);
    op.process = std::make_unique<BackgroundProcess>(
        std::vector<std::string>{KILN_OPERATOR_BIN,
                                 "--kubeconfig",
                                 cluster.kubeconfig,
                                 "--leader-elect",
                                 "--leader-election-id",
                                 lease,
                                 "--leader-election-namespace",
                                 "default",
                                 "--leader-election-identity",
                                 id,
                                 "--lease-duration",
                                 "4s",
                                 "--renew-deadline",
                                 "3s",
                                 "--retry-period",
                                 "500ms",
                                 "--metrics-bind-address",
                                 "127.0.0.1:" + std::to_string(metrics_port),
                                 "--health-probe-bind-address",
                                 "127.0.0.1:" + std::to_string(health_port)},
        dir.path() + "/" + id + ".log");
    return op;
  };
  auto holder = [&] {
    auto l = (*client)->Get(kube::resources::kLeases, "default", lease);
    REQUIRE(l.ok());
    return (*l)["spec"].value("holderIdentity", "");
  };
  const std::string leading = R"("msg":"became leader")";

  Operator a = start("a");
  REQUIRE(WaitFor(*a.process, leading, std::chrono::seconds(60)));
  Operator b = start("b");
  CHECK(b.WaitHealthy("/readyz") == 200);  // A standby is ready: its caches serve.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CHECK(b.process->Output().find(leading) == std::string::npos);  // Only one leads.
  CHECK(holder() == "a");

  // Probes and metrics of a live manager.
  CHECK(a.WaitHealthy("/healthz") == 200);
  int code = 0;
  CHECK(a.Get(a.health_url, "/readyz?verbose", &code).find("[+]informers ok") != std::string::npos);
  CHECK(code == 200);
  std::string metrics = a.Get(a.metrics_url, "/metrics", &code);
  INFO(metrics);
  CHECK(code == 200);
  CHECK(metrics.find(R"(leader_election_master_status{name=")" + lease + R"("} 1)") !=
        std::string::npos);
  CHECK(b.Get(b.metrics_url, "/metrics")
            .find(R"(leader_election_master_status{name=")" + lease + R"("} 0)") !=
        std::string::npos);
  // Lease renewals are PUTs answered 200, timed per verb and code.
  CHECK(metrics.find(R"(rest_client_request_duration_seconds_count{code="200",host=")" +
                     (*client)->config().server + R"(",verb="PUT"})") != std::string::npos);

  // A crashes without releasing: B must wait out the lease, then lead.
  a.process->Signal(SIGKILL);
  auto killed = steady_clock::now();
  REQUIRE(WaitFor(*b.process, leading, std::chrono::seconds(60)));
  auto failover =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - killed);
  std::cout << "operator failover after SIGKILL: " << failover.count()
            << " ms (lease 4 s, renew deadline 3 s, retry 0.5 s)\n";
  CHECK(holder() == "b");

  // B stops on SIGTERM: exits 0, logs it, and releases the lease so C takes
  // over without waiting out the lease.
  b.process->Signal(SIGTERM);
  CHECK(b.process->Wait() == 0);
  std::string log = b.process->Output();
  CHECK(log.find(R"("msg":"stopped cleanly")") != std::string::npos);
  CHECK(log.find(R"("signal":15)") != std::string::npos);
  CHECK(holder() == "");
  Operator c = start("c");
  auto started = steady_clock::now();
  REQUIRE(WaitFor(*c.process, leading, std::chrono::seconds(60)));
  std::cout << "operator handover after SIGTERM: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - started)
                   .count()
            << " ms from the new process's start\n";
  c.process->Signal(SIGTERM);
  CHECK(c.process->Wait() == 0);
}

TEST_CASE(
    "an operator that cannot reach its API server stays alive, never leads, and stops on SIGTERM",
    "[integration][manager]") {
  TempDir dir;
  // A kubeconfig whose server does not listen.
  const std::string kubeconfig = dir.path() + "/kubeconfig";
  {
    std::FILE* f = std::fopen(kubeconfig.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        "clusters: [{name: dead, cluster: {server: \"https://127.0.0.1:1\"}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: u}}]\n",
        f);
    std::fclose(f);
  }
  int health_port = FreePort();
  BackgroundProcess op(
      {KILN_OPERATOR_BIN, "--kubeconfig", kubeconfig, "--leader-elect", "--lease-duration", "4s",
       "--renew-deadline", "3s", "--retry-period", "500ms", "--metrics-bind-address", "0",
       "--health-probe-bind-address", "127.0.0.1:" + std::to_string(health_port)},
      dir.path() + "/op.log");
  Operator probe{nullptr, "", "http://127.0.0.1:" + std::to_string(health_port)};
  CHECK(probe.WaitHealthy("/healthz") == 200);  // Alive: restarting would not help.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CHECK(op.Output().find(R"("msg":"became leader")") == std::string::npos);
  op.Signal(SIGTERM);
  CHECK(op.Wait() == 0);  // Stops promptly even while campaigning against a dead server.
}

// Labels every ConfigMap it sees and records an event about it, through the
// manager's event recorder.
class LabelingReconciler final : public Reconciler {
 public:
  LabelingReconciler(kube::Client& client, EventRecorder& events)
      : client_(client), events_(events) {}
  StatusOr<Result> Reconcile(const Context&, const Request& req) override {
    auto cm = client_.Get(kube::resources::kConfigMaps, req.ns, req.name);
    if (!cm.ok()) return cm.status();
    if ((*cm)["metadata"].value("labels", kube::json::object()).contains("reconciled")) {
      return Result{};
    }
    KILN_RETURN_IF_ERROR(client_
                             .Patch(kube::resources::kConfigMaps, req.ns, req.name,
                                    kube::PatchType::kMerge,
                                    R"({"metadata":{"labels":{"reconciled":"yes"}}})")
                             .status());
    events_.Record(*cm, EventType::kNormal, "Labeled", "labeled by the manager test");
    return Result{};
  }

 private:
  kube::Client& client_;
  EventRecorder& events_;
};

TEST_CASE("a manager in process: informer, controller, events, metrics, stop",
          "[integration][manager]") {
  auto lc = LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  const auto& cluster = lc->clusters()[0];
  Metrics metrics;
  auto config = kube::LoadKubeconfig(cluster.kubeconfig);
  REQUIRE(config.ok());
  auto client = kube::Client::New(*config, {.observer = &metrics});
  REQUIRE(client.ok());
  const std::string ns = kiln::testing::UniqueName("mgr");
  REQUIRE((*client)
              ->Create(kube::resources::kNamespaces, "",
                       {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}})
              .ok());

  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  Manager manager(**client, {.name = "manager-test",
                             .metrics_bind_address = address,
                             .health_probe_bind_address = address,
                             .metrics = &metrics});
  LabelingReconciler reconciler(**client, manager.events());
  // Only the test's own objects (each namespace also gets kube-root-ca.crt).
  auto informer = manager.GetInformer(**client, kube::resources::kConfigMaps,
                                      {.ns = ns, .label_selector = "kiln-test"});
  REQUIRE(informer.ok());
  manager.AddController("labeler", reconciler, {.workers = 2}).For(**informer);
  for (int i = 0; i < 5; ++i) {
    REQUIRE((*client)
                ->Create(kube::resources::kConfigMaps, ns,
                         {{"metadata",
                           {{"name", "cm-" + std::to_string(i)},
                            {"labels", {{"kiln-test", "manager"}}}}}})
                .ok());
  }
  std::atomic<bool> stop{false};
  Status result;
  std::thread runner([&] { result = manager.Run(stop); });

  auto labeled = [&] {
    auto list = (*client)->List(kube::resources::kConfigMaps, ns, {.label_selector = "reconciled"});
    return list.ok() ? list->at("items").size() : 0;
  };
  for (int i = 0; i < 300 && labeled() < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(labeled() == 5);
  CHECK(manager.leading());  // No leader election: it leads at once.
  REQUIRE(manager.events().Flush(std::chrono::seconds(30)));
  auto events = (*client)->List(kube::resources::kEvents, ns, {.field_selector = "reason=Labeled"});
  REQUIRE(events.ok());
  CHECK(events->at("items").size() == 5);
  if (!events->at("items").empty()) {
    const auto& ev = events->at("items")[0];
    CHECK(ev["involvedObject"]["kind"] == "ConfigMap");
    CHECK(ev["source"]["component"] == "manager-test");
  }

  auto scrape = HttpFetch(manager.metrics_url(), "/metrics");
  REQUIRE(scrape.ok());
  INFO(scrape->body);
  CHECK(scrape->body.find(R"(kiln_informer_objects{resource="configmaps"} 5)") !=
        std::string::npos);
  CHECK(scrape->body.find(
            R"(controller_runtime_reconcile_total{controller="labeler",result="success"})") !=
        std::string::npos);
  CHECK(scrape->body.find(R"(verb="WATCH")") != std::string::npos);
  auto ready = HttpFetch(manager.health_url(), "/readyz");
  REQUIRE(ready.ok());
  CHECK(ready->status == 200);

  stop = true;
  runner.join();
  CHECK(result.ok());
  CHECK(!HttpFetch(manager.metrics_url(), "/metrics").ok());  // Endpoints closed.
  (void)(*client)->Delete(kube::resources::kNamespaces, "", ns);
}

std::vector<std::string> OwnerLabel(const kube::json& cm) {
  std::string owner = cm["metadata"].value("labels", kube::json::object()).value("owner", "");
  return owner.empty() ? std::vector<std::string>{} : std::vector<std::string>{owner};
}

// Writes into each owner ConfigMap how many member ConfigMaps (in another
// namespace, labelled owner=<name>) it has, reading both from the cache and
// writing through the API. The owner named "wait" waits on its context.
class MemberCountReconciler final : public Reconciler {
 public:
  MemberCountReconciler(kube::Client& client, const Reader& owners, const Reader& members)
      : client_(client), owners_(owners), members_(members) {}
  StatusOr<Result> Reconcile(const Context& ctx, const Request& req) override {
    auto owner = owners_.Get(req.ns, req.name);
    if (kube::IsNotFound(owner.status())) return Result{};
    if (!owner.ok()) return owner.status();
    if (req.name == "wait") {
      waiting_ = true;
      ctx.Sleep(std::chrono::hours(1));
      return ctx.Err();
    }
    auto members = members_.List({.index = "owner-label", .index_value = req.name});
    if (!members.ok()) return members.status();
    const std::string count = std::to_string(members->size());
    if ((**owner).value("data", kube::json::object()).value("members", "") == count) {
      return Result{};
    }
    kube::json patch = {{"data", {{"members", count}}}};
    KILN_RETURN_IF_ERROR(client_
                             .Patch(kube::resources::kConfigMaps, req.ns, req.name,
                                    kube::PatchType::kMerge, patch.dump())
                             .status());
    return Result{};
  }
  std::atomic<bool> waiting_{false};

 private:
  kube::Client& client_;
  const Reader& owners_;
  const Reader& members_;
};

TEST_CASE("a manager's controller reads its cache, follows a Watches mapping and stops promptly",
          "[integration][manager]") {
  auto lc = LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  auto client = lc->Client(lc->clusters()[0]);
  REQUIRE(client.ok());
  kube::Client& c = **client;
  const std::string owners_ns = kiln::testing::UniqueName("owners");
  const std::string members_ns = kiln::testing::UniqueName("members");
  for (const auto& ns : {owners_ns, members_ns}) {
    REQUIRE(c.Create(kube::resources::kNamespaces, "",
                     {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}})
                .ok());
  }
  auto create = [&](const std::string& ns, const std::string& name, kube::json labels) {
    REQUIRE(c.Create(kube::resources::kConfigMaps, ns,
                     {{"metadata", {{"name", name}, {"labels", labels}}}})
                .ok());
  };
  create(owners_ns, "a", {{"kiln-test", "owner"}});
  create(owners_ns, "b", {{"kiln-test", "owner"}});
  create(members_ns, "m1", {{"kiln-test", "member"}, {"owner", "a"}});
  create(members_ns, "m2", {{"kiln-test", "member"}, {"owner", "a"}});
  create(members_ns, "m3", {{"kiln-test", "member"}, {"owner", "b"}});

  Metrics metrics;
  Manager manager(c, {.name = "member-count-test",
                      .metrics_bind_address = "0",
                      .health_probe_bind_address = "0",
                      .graceful_shutdown_timeout = std::chrono::hours(1),
                      .metrics = &metrics});
  auto owners = manager.GetInformer(c, kube::resources::kConfigMaps,
                                    {.ns = owners_ns, .label_selector = "kiln-test=owner"});
  auto members = manager.GetInformer(c, kube::resources::kConfigMaps,
                                     {.ns = members_ns, .label_selector = "kiln-test=member"});
  REQUIRE(owners.ok());
  REQUIRE(members.ok());
  REQUIRE((*members)->AddIndex("owner-label", OwnerLabel).ok());
  CacheReader owner_reader(**owners), member_reader(**members);
  MemberCountReconciler reconciler(c, owner_reader, member_reader);
  Controller& controller = manager.AddController("member-count", reconciler, {.workers = 2});
  controller.For(**owners);
  controller.Watches(**members, [&](const kube::Object& cm) {
    std::vector<Request> out;
    for (const auto& owner : OwnerLabel(*cm)) out.push_back({owners_ns, owner});
    return out;
  });

  std::atomic<bool> stop{false};
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });
  auto count = [&](const std::string& name) {
    auto cm = c.Get(kube::resources::kConfigMaps, owners_ns, name);
    return cm.ok() ? cm->value("data", kube::json::object()).value("members", "") : "";
  };
  auto wait_count = [&](const std::string& name, const std::string& want) {
    for (int i = 0; i < 600 && count(name) != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return count(name);
  };
  CHECK(wait_count("a", "2") == "2");
  CHECK(wait_count("b", "1") == "1");
  // A new member wakes its owner through the mapping; moving one moves both counts.
  create(members_ns, "m4", {{"kiln-test", "member"}, {"owner", "b"}});
  CHECK(wait_count("b", "2") == "2");
  REQUIRE(c.Patch(kube::resources::kConfigMaps, members_ns, "m1", kube::PatchType::kMerge,
                  R"({"metadata":{"labels":{"owner":"b"}}})")
              .ok());
  CHECK(wait_count("a", "1") == "1");
  CHECK(wait_count("b", "3") == "3");

  // A reconcile waiting on its context: Stop must not wait out the hour.
  create(owners_ns, "wait", {{"kiln-test", "owner"}});
  for (int i = 0; i < 600 && !reconciler.waiting_.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(reconciler.waiting_.load());
  stop = true;
  REQUIRE(run.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
  CHECK(run.get().ok());
  CHECK(controller.stats().cancelled == 1);
  CHECK(controller.stats().errors == 0);
  for (const auto& ns : {owners_ns, members_ns}) {
    (void)c.Delete(kube::resources::kNamespaces, "", ns);  // Best effort: names are unique.
  }
}

}  // namespace
}  // namespace kiln::runtime
