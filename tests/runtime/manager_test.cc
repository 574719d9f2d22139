// The Manager in process over fake API servers: one shared informer per
// (cluster, resource, namespace), indexes registered once, and a stop that
// cancels reconciles waiting on their context.
#include "runtime/manager.h"

#include <future>

#include <catch2/catch.hpp>

#include "runtime/cache_reader.h"
#include "tests/runtime/fake_cluster.h"

namespace kiln::runtime {
namespace {

using nlohmann::json;
using testing::FakeCluster;
using testing::Obj;

ManagerOptions Quiet(Metrics& metrics) {
  return {.name = "manager-unit-test",
          .metrics_bind_address = "0",
          .health_probe_bind_address = "0",
          .cache_sync_timeout = std::chrono::seconds(30),
          // Only a cancelled reconcile lets Run return within the tests' bounds.
          .graceful_shutdown_timeout = std::chrono::hours(1),
          .metrics = &metrics};
}

std::vector<std::string> ByApp(const json& o) { return {o["metadata"]["labels"].value("app", "")}; }
std::vector<std::string> ByName(const json& o) { return {o["metadata"].value("name", "")}; }

TEST_CASE("the manager shares one informer per cluster, resource and namespace",
          "[runtime][manager]") {
  FakeCluster hub, member;
  Metrics metrics;
  Manager manager(*hub.client, Quiet(metrics));
  auto pods = manager.GetInformer(*hub.client, kube::resources::kPods);
  REQUIRE(pods.ok());
  auto again = manager.GetInformer(*hub.client, kube::resources::kPods);
  REQUIRE(again.ok());
  CHECK(*again == *pods);

  auto in_ns = manager.GetInformer(*hub.client, kube::resources::kPods, {.ns = "a"});
  REQUIRE(in_ns.ok());
  CHECK(*in_ns != *pods);
  auto other_resource = manager.GetInformer(*hub.client, kube::resources::kConfigMaps);
  REQUIRE(other_resource.ok());
  CHECK(*other_resource != *pods);
  auto other_cluster = manager.GetInformer(*member.client, kube::resources::kPods);
  REQUIRE(other_cluster.ok());
  CHECK(*other_cluster != *pods);

  // Same key, other options: refused rather than silently sharing the wrong cache.
  auto selected =
      manager.GetInformer(*hub.client, kube::resources::kPods, {.label_selector = "app=x"});
  CHECK(selected.status().code() == StatusCode::kFailedPrecondition);

  // Indexes live on the shared informer: registered once by name.
  CHECK((*pods)->AddIndex("app", ByApp).ok());
  CHECK((*again)->AddIndex("app", ByApp).ok());  // Another controller, the same index.
  CHECK((*again)->AddIndex("app", ByName).code() == StatusCode::kAlreadyExists);
  CHECK((*in_ns)->AddIndex("app", ByName).ok());  // Another informer has its own indexes.
}

// Lists what the cache holds, then waits on its context until stopped.
class WaitingReconciler final : public Reconciler {
 public:
  explicit WaitingReconciler(const Reader& reader) : reader_(reader) {}
  StatusOr<Result> Reconcile(const Context& ctx, const Request& req) override {
    auto obj = reader_.Get(req.ns, req.name);
    if (!obj.ok()) return obj.status();
    waiting_ = true;
    ctx.Sleep(std::chrono::hours(1));
    return ctx.Err();
  }
  std::atomic<bool> waiting_{false};

 private:
  const Reader& reader_;
};

TEST_CASE("a stopping manager cancels waiting reconciles and refuses late informers and indexes",
          "[runtime][manager]") {
  FakeCluster hub;
  hub.ListReturns({Obj("a", "cm", {})});
  Metrics metrics;
  Manager manager(*hub.client, Quiet(metrics));
  auto cms = manager.GetInformer(*hub.client, kube::resources::kConfigMaps);
  REQUIRE(cms.ok());
  CacheReader reader(**cms);
  WaitingReconciler r(reader);
  Controller& controller = manager.AddController("waiting", r);
  controller.For(**cms);

  std::atomic<bool> stop{false};
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });
  for (int i = 0; i < 3000 && !r.waiting_.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(r.waiting_.load());  // Read the object from the cache, then waited.

  auto late = manager.GetInformer(*hub.client, kube::resources::kSecrets);
  CHECK(late.status().code() == StatusCode::kFailedPrecondition);
  CHECK((*cms)->AddIndex("late", ByName).code() == StatusCode::kFailedPrecondition);
  // The running informer is still handed out: it already exists.
  CHECK(manager.GetInformer(*hub.client, kube::resources::kConfigMaps).ok());

  stop = true;
  // The hour-long wait saw the stop (the grace period is an hour too).
  REQUIRE(run.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
  CHECK(run.get().ok());
  CHECK(controller.stats().cancelled == 1);
  CHECK(controller.stats().errors == 0);
}

}  // namespace
}  // namespace kiln::runtime
