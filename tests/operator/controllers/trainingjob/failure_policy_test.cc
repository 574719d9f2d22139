// The failure policy: defaults without rules, rules in order (exit codes In
// and NotIn, reasons), maxRestarts turning a restart into a failure, the
// doubling backoff with its cap, and node quarantine within a window.
#include "operator/controllers/trainingjob/failure_policy.h"

#include <catch2/catch.hpp>

namespace kiln::trainingjob {
namespace {

namespace v1 = api::v1alpha1;
using Catch::Contains;
using namespace std::chrono_literals;

FailureClassification Failed(int32_t code) {
  WorkerFailure f;
  f.exit_code = code;
  return Classify(f);
}

v1::FailureRule OnCodes(std::string action, std::string op, std::vector<int32_t> values) {
  v1::FailureRule r;
  r.action = std::move(action);
  r.on_exit_codes = v1::ExitCodeMatch{std::move(op), std::move(values)};
  return r;
}

v1::FailureRule OnReasons(std::string action, std::vector<std::string> reasons) {
  v1::FailureRule r;
  r.action = std::move(action);
  r.on_reasons = std::move(reasons);
  return r;
}

TEST_CASE("without rules, retryable failures restart and terminal ones fail",
          "[trainingjob][failure]") {
  for (int32_t code : {1, 3, 4, 5, 137}) {
    INFO("exit " << code);
    auto d = Decide(Failed(code), code, std::nullopt, 0);
    CHECK(d.action == FailureAction::kRestart);
    CHECK_THAT(d.why, Contains("retryable"));
  }
  for (int32_t code : {2, 6}) {
    INFO("exit " << code);
    auto d = Decide(Failed(code), code, std::nullopt, 0);
    CHECK(d.action == FailureAction::kFail);
    CHECK_THAT(d.why, Contains("cannot succeed"));
  }
}

TEST_CASE("the first matching rule decides", "[trainingjob][failure]") {
  v1::FailurePolicy p;
  p.rules = std::vector<v1::FailureRule>{
      OnCodes("Ignore", "In", {42}),
      OnReasons("Fail", {"OOMKilled", "LossDiverged"}),
      OnCodes("Restart", "In", {6}),  // The user knows their data shows up late.
      OnCodes("Fail", "NotIn", {3, 4}),
  };
  auto d = Decide(Failed(42), 42, p, 0);
  CHECK(d.action == FailureAction::kIgnore);
  CHECK_THAT(d.why, Contains("rules[0]"));
  d = Decide(Failed(5), 5, p, 0);
  CHECK(d.action == FailureAction::kFail);
  CHECK_THAT(d.why, Contains("rules[1]"));
  CHECK_THAT(d.why, Contains("LossDiverged"));
  d = Decide(Failed(6), 6, p, 0);
  CHECK(d.action == FailureAction::kRestart);
  CHECK_THAT(d.why, Contains("rules[2]"));
  d = Decide(Failed(1), 1, p, 0);
  CHECK(d.action == FailureAction::kFail);
  CHECK_THAT(d.why, Contains("rules[3]"));
  // 3 and 4 match no rule: the default.
  CHECK(Decide(Failed(4), 4, p, 0).action == FailureAction::kRestart);
  // Without an exit code no exit-code rule matches (NotIn included).
  WorkerFailure gone;
  gone.node_health = NodeHealth::kGone;
  auto node = Decide(Classify(gone), std::nullopt, p, 0);
  CHECK(node.action == FailureAction::kRestart);
  CHECK_THAT(node.why, Contains("NodeFailure is retryable"));
}

TEST_CASE("restarts beyond maxRestarts fail the job, saying why", "[trainingjob][failure]") {
  CHECK(Decide(Failed(1), 1, std::nullopt, kDefaultMaxRestarts - 1).action ==
        FailureAction::kRestart);
  auto d = Decide(Failed(1), 1, std::nullopt, kDefaultMaxRestarts);
  CHECK(d.action == FailureAction::kFail);
  CHECK_THAT(d.why, Contains("maxRestarts 10"));
  v1::FailurePolicy none;
  none.max_restarts = 0;
  CHECK(Decide(Failed(4), 4, none, 0).action == FailureAction::kFail);
  // Ignore is not a restart and never hits the limit.
  none.rules = std::vector<v1::FailureRule>{OnCodes("Ignore", "In", {4})};
  CHECK(Decide(Failed(4), 4, none, 99).action == FailureAction::kIgnore);
}

TEST_CASE("the restart delay doubles from initial and stops at max", "[trainingjob][failure]") {
  CHECK(RestartDelay(std::nullopt, 0) == 10s);
  CHECK(RestartDelay(std::nullopt, 1) == 20s);
  CHECK(RestartDelay(std::nullopt, 4) == 160s);
  CHECK(RestartDelay(std::nullopt, 5) == 5min);
  CHECK(RestartDelay(std::nullopt, 1000) == 5min);  // No overflow.
  v1::FailurePolicy p;
  p.backoff = v1::Backoff{"500ms", "3s"};
  CHECK(RestartDelay(p, 0) == 500ms);
  CHECK(RestartDelay(p, 2) == 2s);
  CHECK(RestartDelay(p, 3) == 3s);
  p.backoff = v1::Backoff{"0s", "1m"};
  CHECK(RestartDelay(p, 7) == 0s);
}

TEST_CASE("only a lost member cluster restarts without the backoff", "[trainingjob][failure]") {
  CHECK_FALSE(BacksOff(FailureReason::kClusterUnavailable));
  for (FailureReason r :
       {FailureReason::kNodeFailure, FailureReason::kGPUFault, FailureReason::kWorkerError,
        FailureReason::kCollectiveTimeout, FailureReason::kLossDiverged, FailureReason::kPreempted,
        FailureReason::kOOMKilled}) {
    INFO(FailureReasonName(r));
    CHECK(BacksOff(r));
  }
}

v1::RestartRecord Record(std::string time, std::string reason, std::string node,
                         std::string cluster = "kiln-1") {
  v1::RestartRecord r;
  r.time = std::move(time);
  r.reason = std::move(reason);
  r.node = std::move(node);
  r.cluster = std::move(cluster);
  return r;
}

TEST_CASE("nodes with repeated hardware faults in the window are quarantined",
          "[trainingjob][failure]") {
  const std::vector<v1::RestartRecord> history = {
      Record("2026-12-03T09:00:00Z", "GPUFault", "gpu-1"),  // Older than 24h at `now`.
      Record("2026-12-04T08:00:00Z", "GPUFault", "gpu-1"),
      Record("2026-12-04T09:00:00Z", "NodeFailure", "gpu-2"),
      Record("2026-12-04T09:30:00Z", "CollectiveTimeout", "gpu-2"),  // Not a node fault.
      Record("2026-12-04T09:40:00Z", "GPUFault", "gpu-3"),
      Record("2026-12-04T09:50:00Z", "NodeFailure", "gpu-3"),
      Record("2026-12-04T09:55:00Z", "GPUFault", "gpu-3", "kiln-2"),  // Another cluster's gpu-3.
      Record("not a time", "GPUFault", "gpu-4"),
      Record("2026-12-04T09:58:00Z", "GPUFault", "gpu-4"),
  };
  auto faults = NodeFaults(history);
  CHECK(faults.size() == 7);  // The CollectiveTimeout and the unreadable time are not counted.
  const auto now = std::chrono::sys_days(std::chrono::year(2026) / 12 / 4) + 10h;
  auto nodes = NodesToQuarantine(faults, std::nullopt, now);  // Default: 2 faults in 24h.
  CHECK(nodes == std::vector<NodeKey>{{"kiln-1", "gpu-3"}});
  v1::FailurePolicy p;
  p.node_quarantine = v1::NodeQuarantine{1, "1h"};
  CHECK(NodesToQuarantine(faults, p, now) ==
        std::vector<NodeKey>{
            {"kiln-1", "gpu-2"}, {"kiln-1", "gpu-3"}, {"kiln-1", "gpu-4"}, {"kiln-2", "gpu-3"}});
  p.node_quarantine = v1::NodeQuarantine{2, "48h"};
  CHECK(NodesToQuarantine(faults, p, now) ==
        std::vector<NodeKey>{{"kiln-1", "gpu-1"}, {"kiln-1", "gpu-3"}});
  p.node_quarantine = v1::NodeQuarantine{0, "48h"};
  CHECK(NodesToQuarantine(faults, p, now).empty());

  // A quarantine ends when its second newest fault (of the default two)
  // leaves the window: gpu-3's faults at 09:40 and 09:50, so 09:40 + 24h.
  const auto at = [](int day, std::chrono::hours h, std::chrono::minutes m) {
    return std::chrono::system_clock::time_point(
        std::chrono::sys_days(std::chrono::year(2026) / 12 / day) + h + m);
  };
  CHECK(QuarantineEnds(faults, std::nullopt, {"kiln-1", "gpu-3"}, now) == at(5, 9h, 40min));
  CHECK_FALSE(QuarantineEnds(faults, std::nullopt, {"kiln-1", "gpu-2"}, now));
  CHECK_FALSE(QuarantineEnds(faults, std::nullopt, {"kiln-1", "gpu-3"}, at(5, 9h, 41min)));
  p.node_quarantine = v1::NodeQuarantine{1, "1h"};  // One fault: the newest decides.
  CHECK(QuarantineEnds(faults, p, {"kiln-1", "gpu-3"}, now) == at(4, 10h, 50min));
  p.node_quarantine = v1::NodeQuarantine{0, "1h"};
  CHECK_FALSE(QuarantineEnds(faults, p, {"kiln-1", "gpu-3"}, now));
}

}  // namespace
}  // namespace kiln::trainingjob
