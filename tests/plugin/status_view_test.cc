#include "plugin/status_view.h"

#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "base/time_format.h"

namespace kiln::plugin {
namespace {

using Catch::Contains;
using nlohmann::json;

json Fixture(const std::string& name) {
  std::ifstream in(std::string(KILN_SOURCE_DIR) + "/tests/plugin/testdata/" + name);
  REQUIRE(in.good());
  return json::parse(in);
}

// Also used for a global, so no REQUIRE: a bad literal is a test bug.
TimePoint At(const std::string& rfc3339) {
  auto t = ParseRfc3339(rfc3339);
  if (!t.ok()) std::abort();
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(t->time_since_epoch()));
}

const TimePoint kNow = At("2026-12-05T10:30:00Z");

TEST_CASE("a running TrainingJob's view", "[plugin][status]") {
  CHECK(FormatTrainingJob(Fixture("trainingjob_running.json"), kNow) ==
        R"(Name:             gpt-pretrain
Namespace:        research
Phase:            Running (attempt 2)
Progress:         step 2500 / 10000 (25.0%)
Loss:             2.614 (validation 2.701)
Tokens/s:         1,234,568
Workers:          4 ready of 4
Last checkpoint:  step 2000 (loss 2.65), 4m30s ago (2026-12-05T10:25:30Z)
                  file:///checkpoints/gpt-pretrain/step-00002000.ckpt
Started:          2h29m ago (2026-12-05T08:00:05Z)
Restarts:         2 (at most 5)
  #  AGE    REASON              CLUSTER   NODE         EXIT  AT STEP  RESUMED FROM  MESSAGE
  1  1h20m  GPUFault            gpu-east  east-node-3  3     812      500           Xid 79: GPU has fallen off the bus
  2  50m    ClusterUnavailable  gpu-west  -            -     1400     1000
Placement:
  CLUSTER   WORKERS  NODES (rank order)
  gpu-east  3        east-node-0, east-node-1, east-node-2
  hub       1        hub-node-7
Quarantined nodes: gpu-east/east-node-3
Conditions:
  TYPE       STATUS  REASON       AGE  MESSAGE
  Scheduled  True    Placed       49m  attempt 2 on gpu-east, hub
  Running    True    GangRunning  49m  4 of 4 workers running
)");
}

TEST_CASE("a TrainingJob without status yet", "[plugin][status]") {
  json job = Fixture("trainingjob_running.json");
  job.erase("status");
  const std::string view = FormatTrainingJob(job, kNow);
  CHECK_THAT(view, Contains("Phase:            Pending\n"));
  CHECK_THAT(view, Contains("Progress:         not started (10000 steps)\n"));
  CHECK_THAT(view, Contains("Last checkpoint:  none yet\n"));
  CHECK_THAT(view, Contains("Placement:        none\n"));
  CHECK_THAT(view, !Contains("Loss"));
  CHECK_THAT(view, !Contains("Conditions"));
}

TEST_CASE("restart numbers count from the restarts the history no longer holds",
          "[plugin][status]") {
  json job = Fixture("trainingjob_running.json");
  job["status"]["restarts"] = 12;  // The history keeps the newest records only.
  const std::string view = FormatTrainingJob(job, kNow);
  CHECK_THAT(view, Contains("\n  11  1h20m  GPUFault"));
  CHECK_THAT(view, Contains("\n  12  50m    ClusterUnavailable"));
}

TEST_CASE("an object the types cannot read is shown with the reason", "[plugin][status]") {
  json job = Fixture("trainingjob_running.json");
  job["status"]["step"] = "many";
  const std::string view = FormatTrainingJob(job, kNow);
  CHECK_THAT(view, Contains("Phase:            Running\n"));
  CHECK_THAT(view, Contains("status.step"));
  CHECK_THAT(view, Contains("-o yaml"));
}

TEST_CASE("background analysis and quality-gate steps are named", "[plugin][status]") {
  json md = Fixture("modeldeployment_canary.json");
  md["spec"]["strategy"]["canary"]["steps"] =
      json::array({{{"setWeight", 25}},
                   {{"analysis", {{"background", true}}}},
                   {{"qualityGate", json::object()}},
                   {{"qualityGate", {{"samples", 1024}, {"maxRegression", 0.05}}}},
                   {{"setWeight", 100}}});
  const std::string view = FormatModelDeployment(md, kNow);
  CHECK_THAT(view, Contains("  1  analysis (background, until promotion)"));
  CHECK_THAT(view, Contains("  2  qualityGate\n"));
  CHECK_THAT(view, Contains("  3  qualityGate samples 1024 maxRegression 0.05\n"));
  CHECK_THAT(view, !Contains("?"));
}

TEST_CASE("a ModelDeployment in a canary rollout", "[plugin][status]") {
  CHECK(FormatModelDeployment(Fixture("modeldeployment_canary.json"), kNow) ==
        R"(Name:             chat
Namespace:        serving
Phase:            Progressing
Message:          step 1: analysis of v3 (2 of 8 measurements)
Model:            chat v3 (file:///models/chat/v3)
Replicas:         3 ready of 3 (stable wants 2)
Versions:
  ROLE      VERSION  WEIGHT  CHECKPOINT              NOTE
  stable    v2       75%     file:///models/chat/v2
  canary    v3       25%     file:///models/chat/v3
  previous  v1       0%      file:///models/chat/v1  warm until 2026-12-05T10:35:00Z (rollback target)
Steps: 2 of 5, canary weight 25%
  done  0  setWeight 25%
    ->  1  analysis 2m  (started 1m ago)
        2  setWeight 50%
        3  pause (until Promote)
        4  setWeight 100%
Rollout action:   Continue (acted on at generation 5)
Rollbacks:        1
Analysis runs:
  v3-step1  Running  step 1  started 1m ago
    METRIC       VALUE   PHASE         AGE
    error-rate   0.0021  Successful    1m
    error-rate   0.125   Failed        30s
    p99-latency  -       Inconclusive  30s
Conditions:
  TYPE         STATUS  REASON          AGE    MESSAGE
  Available    True    StableServing   4d10h  v2 serves
  Progressing  True    RolloutStarted  2m     v3 at step 1
)");
}

TEST_CASE("a ModelDeployment rolled back, with an action not acted on yet", "[plugin][status]") {
  json md = Fixture("modeldeployment_canary.json");
  json& st = md["status"];
  st["phase"] = "Degraded";
  st["message"] = "analysis failed at step 1: error-rate = 0.125 > max 0.05";
  st.erase("canaryVersion");
  st.erase("canaryWeight");
  st["stoppedVersion"] = "v3";
  st["traffic"] = json::array({{{"version", "v2"}, {"weight", 100}}});
  st["analysisRuns"][0]["phase"] = "Failed";
  st["analysisRuns"][0]["finishedAt"] = "2026-12-05T10:29:31Z";
  st["analysisRuns"][0]["message"] = "error-rate = 0.125 > max 0.05";
  md["spec"]["rollout"]["action"] = "Rollback";
  const std::string view = FormatModelDeployment(md, kNow);
  CHECK_THAT(view, Contains("Phase:            Degraded\n"));
  CHECK_THAT(view, Contains("  stable    v2       100%"));
  CHECK_THAT(view,
             Contains("  stopped   v3       0%      -                       not rolled out again "
                      "until spec.model or spec.rollout.action changes\n"));
  CHECK_THAT(view, !Contains("canary "));
  CHECK_THAT(view, Contains("Steps: (no rollout in progress)\n        0  setWeight 25%\n"));
  CHECK_THAT(view,
             Contains("Rollout action:   Rollback (not acted on yet; last acted on: Continue)"));
  CHECK_THAT(view, Contains("  v3-step1  Failed  step 1  started 1m ago, finished 29s ago\n"
                            "    error-rate = 0.125 > max 0.05\n"));
  CHECK(IsTerminal(Kind::kModelDeployment, md));
  CHECK_FALSE(IsSuccess(Kind::kModelDeployment, md));
}

TEST_CASE("list views", "[plugin][status]") {
  const json job = Fixture("trainingjob_running.json");
  CHECK(FormatList(Kind::kTrainingJob, {job}, false, "research", kNow) ==
        "NAME          PHASE    STEP        LOSS   TOKENS/S   WORKERS  RESTARTS  AGE\n"
        "gpt-pretrain  Running  2500/10000  2.614  1,234,568  4/4      2         2h30m\n");
  CHECK(FormatList(Kind::kModelDeployment, {Fixture("modeldeployment_canary.json")}, true, "",
                   kNow) ==
        "NAMESPACE  NAME  PHASE        STABLE  CANARY  WEIGHTS      STEP  ROLLBACKS  AGE\n"
        "serving    chat  Progressing  v2      v3      v2=75,v3=25  1     1          4d10h\n");
  CHECK(FormatList(Kind::kTrainingJob, {}, false, "research", kNow) ==
        "No trainingjobs found in namespace \"research\".\n");
  CHECK(FormatList(Kind::kModelDeployment, {}, true, "", kNow) == "No modeldeployments found.\n");
}

TEST_CASE("terminal phases for watch", "[plugin][status]") {
  json job = Fixture("trainingjob_running.json");
  CHECK_FALSE(IsTerminal(Kind::kTrainingJob, job));
  job["status"]["phase"] = "Succeeded";
  CHECK(IsTerminal(Kind::kTrainingJob, job));
  CHECK(IsSuccess(Kind::kTrainingJob, job));
  job["status"]["phase"] = "Failed";
  CHECK(IsTerminal(Kind::kTrainingJob, job));
  CHECK_FALSE(IsSuccess(Kind::kTrainingJob, job));
  // A spec the controller has not reconciled yet is about to change it.
  job["metadata"]["generation"] = 4;
  CHECK_FALSE(IsTerminal(Kind::kTrainingJob, job));

  json md = Fixture("modeldeployment_canary.json");
  CHECK_FALSE(IsTerminal(Kind::kModelDeployment, md));  // Progressing.
  md["status"]["phase"] = "Healthy";
  CHECK_FALSE(IsTerminal(Kind::kModelDeployment, md));  // Still a canary: promoting.
  md["status"].erase("canaryVersion");
  CHECK(IsTerminal(Kind::kModelDeployment, md));
  CHECK(IsSuccess(Kind::kModelDeployment, md));
  md["status"]["phase"] = "Paused";  // Waits for a person: not an end.
  CHECK_FALSE(IsTerminal(Kind::kModelDeployment, md));
}

TEST_CASE("ages", "[plugin][status]") {
  CHECK(Age("2026-12-05T10:29:58Z", kNow) == "2s");
  CHECK(Age("2026-12-05T10:25:30Z", kNow) == "4m30s");
  CHECK(Age("2026-12-05T10:15:00Z", kNow) == "15m");
  CHECK(Age("2026-12-05T07:30:00Z", kNow) == "3h");
  CHECK(Age("2026-12-03T09:30:00Z", kNow) == "2d1h");
  CHECK(Age("2026-12-05T10:31:00Z", kNow) == "0s");  // Clock skew: never negative.
  CHECK(Age("yesterday", kNow).empty());
}

}  // namespace
}  // namespace kiln::plugin
