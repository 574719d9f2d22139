#include "runtime/controller.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/runtime/fake_cluster.h"

namespace kiln::runtime {
namespace {

// Scripted outcomes per object name: "throw", "fail", "terminal" or "ok".
class ScriptedReconciler final : public Reconciler {
 public:
  explicit ScriptedReconciler(std::map<std::string, std::vector<std::string>> script)
      : script_(std::move(script)) {}
  StatusOr<Result> Reconcile(const Context&, const Request& req) override {
    std::string outcome;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& steps = script_[req.name];
      auto step = static_cast<size_t>(calls_[req.name]);
      outcome = step < steps.size() ? steps[step] : "ok";
      ++calls_[req.name];
    }
    if (outcome == "throw") throw std::runtime_error("boom");
    if (outcome == "fail") return Status::Unavailable("later");
    if (outcome == "terminal") return Terminal(Status::InvalidArgument("never"));
    return Result{};
  }
  int calls(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[name];
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<std::string>> script_;
  std::map<std::string, int> calls_;
};

TEST_CASE("results decide retries and a throwing reconciler does not kill the process",
          "[runtime][controller]") {
  ScriptedReconciler r({{"a", {"throw", "fail", "ok"}}, {"b", {"terminal"}}, {"c", {"ok"}}});
  Controller controller("scripted", r,
                        {.workers = 2, .queue = {.base_backoff = std::chrono::milliseconds(1)}});
  controller.Start();
  for (const char* key : {"ns/a", "ns/b", "ns/c"}) controller.queue().Add(key);
  for (int i = 0; i < 500 && r.calls("a") < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  controller.Stop();
  CHECK(r.calls("a") == 3);  // Thrown, failed, then succeeded: retried twice, then done.
  CHECK(r.calls("b") == 1);  // Terminal: never retried.
  CHECK(r.calls("c") == 1);
  auto stats = controller.stats();
  CHECK(stats.reconciles == 5);
  CHECK(stats.errors == 2);
  CHECK(stats.terminal_errors == 1);
  CHECK(controller.queue().Failures("ns/a") == 0);
}

TEST_CASE("request keys round-trip", "[runtime][controller]") {
  CHECK(Request::FromKey("ns/name").ns == "ns");
  CHECK(Request::FromKey("ns/name").name == "name");
  CHECK(Request::FromKey("node-1").ns.empty());
  CHECK(Request{"ns", "n"}.Key() == "ns/n");
  CHECK(Request{"", "n"}.Key() == "n");
}

// Waits on its context until stopped, recording what it saw.
class BlockingReconciler final : public Reconciler {
 public:
  StatusOr<Result> Reconcile(const Context& ctx, const Request&) override {
    started_ = true;
    ctx.Sleep(std::chrono::hours(1));
    return ctx.Err();
  }
  std::atomic<bool> started_{false};
};

TEST_CASE("Stop cancels a reconcile waiting on its context, and cancelled is not an error",
          "[runtime][controller]") {
  BlockingReconciler r;
  Controller controller("blocking", r, {.workers = 1});
  controller.Start();
  controller.queue().Add("ns/a");
  controller.queue().Add("ns/b");  // Still queued at Stop: dropped, not reconciled.
  for (int i = 0; i < 500 && !r.started_.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(r.started_.load());
  controller.Stop();  // Returns once the hour-long wait has seen the stop.
  auto stats = controller.stats();
  CHECK(stats.reconciles == 1);
  CHECK(stats.cancelled == 1);
  CHECK(stats.errors == 0);
  CHECK(controller.queue().Failures("ns/a") == 0);  // Not rate-limited as a failure.
}

TEST_CASE("a reconcile past its timeout fails as an ordinary, retried error",
          "[runtime][controller]") {
  BlockingReconciler r;
  Controller controller("timeout", r,
                        {.workers = 1,
                         .queue = {.base_backoff = std::chrono::hours(1)},
                         .reconcile_timeout = std::chrono::milliseconds(20)});
  controller.Start();
  controller.queue().Add("ns/a");
  for (int i = 0; i < 500 && controller.stats().errors == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  controller.Stop();
  CHECK(controller.stats().errors == 1);
  CHECK(controller.stats().cancelled == 0);
  CHECK(controller.queue().Failures("ns/a") == 1);
}

// What the reconciler saw as the thread's current context (which bounds its
// Kubernetes API calls), against the context it was given.
class ContextProbe final : public Reconciler {
 public:
  StatusOr<Result> Reconcile(const Context& ctx, const Request&) override {
    const Context* current = Context::Current();
    std::lock_guard<std::mutex> lock(mu_);
    seen_current = current != nullptr;
    same_deadline =
        current != nullptr && current->deadline() == ctx.deadline() && ctx.deadline().has_value();
    ++calls;
    return Result{};
  }
  std::mutex mu_;
  bool seen_current = false;
  bool same_deadline = false;
  int calls = 0;
};

TEST_CASE("a reconcile's context is the current one while it runs, and only then",
          "[runtime][controller][context]") {
  ContextProbe r;
  Controller controller("probe", r, {.workers = 1, .reconcile_timeout = std::chrono::seconds(30)});
  controller.Start();
  controller.queue().Add("ns/a");
  for (int i = 0; i < 500 && controller.stats().reconciles == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  controller.Stop();
  std::lock_guard<std::mutex> lock(r.mu_);
  REQUIRE(r.calls == 1);
  CHECK(r.seen_current);
  CHECK(r.same_deadline);
  CHECK(Context::Current() == nullptr);
}

using nlohmann::json;
using testing::FakeCluster;
using testing::Obj;
using testing::OwnerRef;

const kube::Resource kJobs{"kiln.dev", "v1alpha1", "trainingjobs", "TrainingJob", true};

std::vector<std::string> Keys(const std::vector<Request>& requests) {
  std::vector<std::string> out;
  for (const auto& r : requests) out.push_back(r.Key());
  return out;
}

TEST_CASE("Owns maps an object to its controlling owner of the right group and kind only",
          "[runtime][controller]") {
  MapFunc owner = MapToControllingOwner(kJobs);
  auto map = [&](json owners) {
    return Keys(owner(std::make_shared<const json>(Obj("ns", "pod", {}, std::move(owners)))));
  };
  using V = std::vector<std::string>;
  CHECK(map(nullptr).empty());
  CHECK(map({OwnerRef("kiln.dev/v1alpha1", "TrainingJob", "j1", "u1", true)}) == V{"ns/j1"});
  // Not the controller: an owner, but not the one that reconciles this object.
  CHECK(map({OwnerRef("kiln.dev/v1alpha1", "TrainingJob", "j1", "u1", false)}).empty());
  // Same kind, another group; another kind of the group.
  CHECK(map({OwnerRef("other.io/v1", "TrainingJob", "j1", "u1", true)}).empty());
  CHECK(map({OwnerRef("kiln.dev/v1alpha1", "ModelDeployment", "m1", "u2", true)}).empty());
  // Any version of the group: the owner's key does not depend on it.
  CHECK(map({OwnerRef("kiln.dev/v1", "TrainingJob", "j2", "u3", true),
             OwnerRef("kiln.dev/v1alpha1", "TrainingJob", "j3", "u4", false)}) == V{"ns/j2"});
}

// Records every key it is asked to reconcile.
class RecordingReconciler final : public Reconciler {
 public:
  StatusOr<Result> Reconcile(const Context&, const Request& req) override {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.insert(req.Key());
    return Result{};
  }
  std::set<std::string> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  bool WaitFor(const std::set<std::string>& want) {
    for (int i = 0; i < 1000; ++i) {
      auto s = seen();
      if (std::includes(s.begin(), s.end(), want.begin(), want.end())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::set<std::string> seen_;
};

TEST_CASE("For, Owns and Watches enqueue through informers of any cluster",
          "[runtime][controller]") {
  // One fake API per informer, so each watch script reaches its informer.
  FakeCluster hub_jobs, hub, member;
  hub_jobs.ListReturns({Obj("ns", "j1", {})});
  json old_pod =
      Obj("ns", "pod", {}, {OwnerRef("kiln.dev/v1alpha1", "TrainingJob", "j1", "u1", true)});
  hub.ListReturns({old_pod});
  // In a member cluster, a labelled pod names the hub object it belongs to.
  member.ListReturns({Obj("work", "w1", {{"kiln.dev/job", "j2"}}), Obj("work", "stray", {})});

  kube::Informer jobs(*hub_jobs.client, kJobs);
  kube::Informer pods(*hub.client, kube::resources::kPods);
  kube::Informer member_pods(*member.client, kube::resources::kPods);
  RecordingReconciler r;
  Controller controller("jobs", r);
  controller.For(jobs);
  controller.Owns(pods, kJobs);
  controller.Watches(member_pods, [](const kube::Object& o) {
    std::string job = (*o)["metadata"]["labels"].value("kiln.dev/job", "");
    if (job.empty()) return std::vector<Request>{};
    return std::vector<Request>{{"ns", job}};
  });
  controller.Start();
  jobs.Start();
  REQUIRE(jobs.WaitForSync(std::chrono::seconds(30)));
  pods.Start();
  REQUIRE(pods.WaitForSync(std::chrono::seconds(30)));
  member_pods.Start();
  REQUIRE(member_pods.WaitForSync(std::chrono::seconds(30)));
  CHECK(r.WaitFor({"ns/j1", "ns/j2"}));

  // The pod changes controller: both the old and the new owner are woken.
  json new_pod =
      Obj("ns", "pod", {}, {OwnerRef("kiln.dev/v1alpha1", "TrainingJob", "j3", "u3", true)}, "2");
  hub.WatchSends({{"MODIFIED", new_pod}});
  CHECK(r.WaitFor({"ns/j3"}));
  controller.Stop();
  jobs.Stop();
  pods.Stop();
  member_pods.Stop();
  // Only mapped keys: the stray member pod maps to nothing, and no key
  // carries the member cluster.
  CHECK(r.seen() == std::set<std::string>{"ns/j1", "ns/j2", "ns/j3"});
}

}  // namespace
}  // namespace kiln::runtime
