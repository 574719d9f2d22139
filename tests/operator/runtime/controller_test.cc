#include "operator/runtime/controller.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>

namespace kiln::runtime {
namespace {

// Scripted outcomes per object name: "throw", "fail", "terminal" or "ok".
class ScriptedReconciler final : public Reconciler {
 public:
  explicit ScriptedReconciler(std::map<std::string, std::vector<std::string>> script)
      : script_(std::move(script)) {}
  StatusOr<Result> Reconcile(const Request& req) override {
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
  Controller controller("scripted", r, 2, {.base_backoff = std::chrono::milliseconds(1)});
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

}  // namespace
}  // namespace kiln::runtime
