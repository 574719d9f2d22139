// A real controller (informer -> work queue -> 4 workers -> reconciler) over
// ConfigMaps on the shared fixture's first cluster.
#include "runtime/controller.h"

#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "kube/api_error.h"
#include "tests/support/local_clusters.h"

namespace kiln::runtime {
namespace {

using kube::json;

// The apiserver drops an empty data map, so read it defensively.
std::string Seen(const json& cm) {
  auto data = cm.find("data");
  return data == cm.end() ? "" : data->value("seen", "");
}

// Marks every ConfigMap with data.seen=true (idempotently); "fail-*" objects
// fail twice before succeeding, "terminal-*" fail for good, "requeue" asks to
// be looked at again three times.
class MarkingReconciler final : public Reconciler {
 public:
  MarkingReconciler(kube::Client& client) : client_(client) {}

  StatusOr<Result> Reconcile(const Context&, const Request& req) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!active_.insert(req.Key()).second) ++overlaps_;
      ++attempts_[req.name];
    }
    StatusOr<Result> out = Do(req);
    std::lock_guard<std::mutex> lock(mu_);
    active_.erase(req.Key());
    return out;
  }

  int attempts(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return attempts_[name];
  }
  int overlaps() {
    std::lock_guard<std::mutex> lock(mu_);
    return overlaps_;
  }

 private:
  StatusOr<Result> Do(const Request& req) {
    auto cm = client_.Get(kube::resources::kConfigMaps, req.ns, req.name);
    if (kube::IsNotFound(cm.status())) return Result{};  // Deleted: nothing to do.
    if (!cm.ok()) return cm.status();
    if (req.name.rfind("terminal-", 0) == 0) {
      return Terminal(Status::InvalidArgument("spec can never work"));
    }
    if (req.name.rfind("fail-", 0) == 0 && attempts(req.name) <= 2) {
      return Status::Unavailable("transient failure");
    }
    if (Seen(*cm) != "true") {
      auto patched = client_.Patch(kube::resources::kConfigMaps, req.ns, req.name,
                                   kube::PatchType::kMerge, R"({"data":{"seen":"true"}})");
      if (!patched.ok()) return patched.status();
    }
    if (req.name == "requeue" && attempts(req.name) < 4) {
      return Result{std::chrono::milliseconds(200)};
    }
    return Result{};
  }

  kube::Client& client_;
  std::mutex mu_;
  std::set<std::string> active_;
  std::map<std::string, int> attempts_;
  int overlaps_ = 0;
};

TEST_CASE("a controller reconciles every object to its desired state",
          "[integration][controller]") {
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  auto client = lc->Client(lc->clusters()[0]);
  REQUIRE(client.ok());
  kube::Client& c = **client;
  std::string ns = testing::UniqueName("kiln-controller");
  REQUIRE(c.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", ns}}}}).ok());
  std::vector<std::string> names = {"requeue", "fail-1", "fail-2", "terminal-1"};
  for (int i = 0; i < 40; ++i) names.push_back("plain-" + std::to_string(i));
  for (const auto& n : names) {
    REQUIRE(c.Create(kube::resources::kConfigMaps, ns,
                     {{"metadata", {{"name", n}, {"labels", {{"ctl", "test"}}}}},
                      {"data", json::object()}})
                .ok());
  }

  MarkingReconciler reconciler(c);
  kube::Informer informer(c, kube::resources::kConfigMaps,
                          {.ns = ns, .label_selector = "ctl=test"});
  Controller controller("configmap-marker", reconciler,
                        {.workers = 4, .queue = {.base_backoff = std::chrono::milliseconds(50)}});
  controller.For(informer);
  informer.Start();
  REQUIRE(informer.WaitForSync(std::chrono::minutes(1)));
  controller.Start();

  auto all_marked = [&] {
    for (const auto& obj : informer.store().List()) {
      std::string name = (*obj)["metadata"]["name"];
      if (name.rfind("terminal-", 0) == 0) continue;
      if (Seen(*obj) != "true") return false;
    }
    return reconciler.attempts("requeue") >= 4;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!all_marked()) {
    if (std::chrono::steady_clock::now() > deadline) FAIL("objects never all reconciled");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Let the update events from the controller's own patches settle.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  controller.Stop();
  informer.Stop();

  CHECK(reconciler.overlaps() == 0);
  CHECK(reconciler.attempts("fail-1") >= 3);      // Two failures, then success.
  CHECK(reconciler.attempts("terminal-1") == 1);  // Never retried.
  CHECK(reconciler.attempts("requeue") >= 4);
  auto stats = controller.stats();
  CHECK(stats.errors >= 4);
  CHECK(stats.terminal_errors == 1);
  CHECK(stats.requeues_after >= 3);
  CHECK(controller.queue().Failures(ns + "/fail-1") == 0);  // Forgotten after success.
  auto terminal = c.Get(kube::resources::kConfigMaps, ns, "terminal-1");
  REQUIRE(terminal.ok());
  CHECK(Seen(*terminal).empty());
  (void)c.Delete(kube::resources::kNamespaces, "", ns);
}

}  // namespace
}  // namespace kiln::runtime
