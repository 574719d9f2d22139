// Failure classification: a table of what the controller can observe about a
// stopped worker (exit codes of the worker's contract, OOMKilled, signals,
// preemption and eviction, taint-manager deletion, node and cluster health)
// and the one reason each gives, with the order in which evidence wins; and
// the failure fields read from real core/v1 Pod JSON.
#include "operator/controllers/trainingjob/failure_classifier.h"

#include <catch2/catch.hpp>

namespace kiln::trainingjob {
namespace {

using Catch::Contains;
using nlohmann::json;

WorkerFailure Exited(int32_t code, std::string message = "") {
  WorkerFailure f;
  f.cluster = "kiln-2";
  f.node = "gpu-7";
  f.pod = "job-worker-3";
  f.exit_code = code;
  f.container_reason = code == 0 ? "Completed" : "Error";
  f.termination_message = std::move(message);
  return f;
}

std::string WorkerMessage(int code, const std::string& reason, const std::string& message,
                          int64_t step) {
  return json{{"exitCode", code}, {"reason", reason}, {"message", message}, {"lastStep", step}}
      .dump();
}

TEST_CASE("each exit code of the worker's contract gives its reason", "[trainingjob][failure]") {
  struct Row {
    int32_t code;
    std::string message;
    FailureReason reason;
    bool retryable;
    bool node_fault;
  };
  const std::vector<Row> rows = {
      {1, "internal: unexpected", FailureReason::kWorkerError, true, false},
      {2, "--layers: must be >= 1", FailureReason::kConfigurationError, false, false},
      {3, "GPU 0 failed its device probe", FailureReason::kGPUFault, true, true},
      {3, "CUDA error: uncorrectable ECC error encountered", FailureReason::kGPUFault, true, true},
      {3, "checkpoint storage unavailable: No space left", FailureReason::kNodeFailure, true, true},
      {4, "allreduce: peer 2 did not answer in 60s", FailureReason::kCollectiveTimeout, true,
       false},
      {5, "step 812: loss nan (not finite)", FailureReason::kLossDiverged, true, false},
      {6, "manifest.json: no such file", FailureReason::kDataError, false, false},
      {7, "accuracy 0.2 < 0.5", FailureReason::kWorkerError, true, false},
      {8, "superseded: job u attempt 4 holds the checkpoints", FailureReason::kSuperseded, false,
       false},
      {137, "", FailureReason::kWorkerError, true, false},
      {143, "", FailureReason::kWorkerError, true, false},
      {42, "", FailureReason::kWorkerError, true, false},
  };
  for (const auto& row : rows) {
    INFO("exit " << row.code << " " << row.message);
    auto c = Classify(Exited(row.code, WorkerMessage(row.code, "X", row.message, 800)));
    CHECK(FailureReasonName(c.reason) == std::string(FailureReasonName(row.reason)));
    CHECK(c.retryable == row.retryable);
    CHECK(c.node_fault == row.node_fault);
    CHECK(c.last_step == 800);
    CHECK_THAT(c.message, Contains("exit code " + std::to_string(row.code)));
    CHECK_THAT(c.message, Contains("pod job-worker-3 on node gpu-7 in cluster kiln-2"));
    if (!row.message.empty()) CHECK_THAT(c.message, Contains(row.message));
  }
  CHECK(Classify(Exited(5)).resume_before_last_checkpoint);
  CHECK_FALSE(Classify(Exited(4)).resume_before_last_checkpoint);
  CHECK_THAT(Classify(Exited(137)).message, Contains("signal 9"));
}

TEST_CASE("a termination message that is not the worker's JSON is kept as text",
          "[trainingjob][failure]") {
  auto c = Classify(Exited(3, "Xid 79: GPU has fallen off the bus"));
  CHECK(c.reason == FailureReason::kGPUFault);
  CHECK_THAT(c.message, Contains("fallen off the bus"));
  CHECK_FALSE(c.last_step.has_value());
  auto half = Classify(Exited(1, R"({"message": 3, "lastStep": "x"})"));
  CHECK(half.reason == FailureReason::kWorkerError);
  CHECK_FALSE(half.last_step.has_value());
}

TEST_CASE("evidence from outside the worker wins over its exit code", "[trainingjob][failure]") {
  WorkerFailure f = Exited(4, WorkerMessage(4, "CommunicationTimeout", "peer gone", 90));
  f.container_reason = "OOMKilled";
  f.exit_code = 137;
  CHECK(Classify(f).reason == FailureReason::kOOMKilled);
  f.pod_reason = "Evicted";
  CHECK(Classify(f).reason == FailureReason::kPreempted);
  f.disruption_reason = "PreemptionByScheduler";
  auto preempted = Classify(f);
  CHECK(preempted.reason == FailureReason::kPreempted);
  CHECK_THAT(preempted.message, Contains("PreemptionByScheduler"));
  CHECK_FALSE(preempted.node_fault);
  f.disruption_reason = "DeletionByTaintManager";
  auto tainted = Classify(f);
  CHECK(tainted.reason == FailureReason::kNodeFailure);
  CHECK(tainted.node_fault);
  f.node_health = NodeHealth::kUnknown;
  auto node = Classify(f);
  CHECK(node.reason == FailureReason::kNodeFailure);
  CHECK_THAT(node.message, Contains("node gpu-7 is Unknown"));
  CHECK(node.last_step == 90);
  f.cluster_reachable = false;
  auto cluster = Classify(f);
  CHECK(cluster.reason == FailureReason::kClusterUnavailable);
  CHECK(cluster.retryable);
  CHECK_FALSE(cluster.node_fault);  // The nodes may be fine; the cluster is not reachable.
  CHECK_THAT(cluster.message, Contains("member cluster kiln-2 is unreachable"));
}

TEST_CASE("a pod gone without an exit, and node states", "[trainingjob][failure]") {
  WorkerFailure f;
  f.pod = "p";
  f.node = "n";
  f.pod_gone = true;
  auto gone = Classify(f);
  CHECK(gone.reason == FailureReason::kWorkerError);
  CHECK_THAT(gone.message, Contains("deleted before it exited"));
  for (auto health : {NodeHealth::kNotReady, NodeHealth::kGone}) {
    f.node_health = health;
    CHECK(Classify(f).reason == FailureReason::kNodeFailure);
  }
  f.node_health = NodeHealth::kReady;
  f.pod_gone = false;
  f.pod_reason = "NodeLost";
  CHECK(Classify(f).reason == FailureReason::kNodeFailure);
}

TEST_CASE("reason names round-trip and match the API's enum", "[trainingjob][failure]") {
  for (const char* name : {"GPUFault", "NodeFailure", "ClusterUnavailable", "Preempted",
                           "OOMKilled", "CollectiveTimeout", "LossDiverged", "WorkerError",
                           "ConfigurationError", "DataError", "Superseded"}) {
    auto r = FailureReasonFromName(name);
    REQUIRE(r.has_value());
    CHECK(std::string(FailureReasonName(*r)) == name);
  }
  CHECK_FALSE(FailureReasonFromName("gpufault").has_value());
}

TEST_CASE("failure fields come from a pod's status", "[trainingjob][failure]") {
  // As the API server returns a worker pod whose container exited with 6.
  json pod = json::parse(R"({
    "metadata": {"name": "job-worker-0"},
    "spec": {"nodeName": "node-a", "containers": [{"name": "worker"}]},
    "status": {
      "phase": "Failed",
      "conditions": [{"type": "Ready", "status": "False"}],
      "containerStatuses": [{
        "name": "worker",
        "state": {"terminated": {"exitCode": 6, "reason": "Error",
          "message": "{\"exitCode\":6,\"reason\":\"DataError\",\"message\":\"no shards\",\"lastStep\":0}"}}
      }]
    }
  })");
  auto f = WorkerFailureFromPod(pod);
  REQUIRE(f.has_value());
  CHECK(f->pod == "job-worker-0");
  CHECK(f->node == "node-a");
  CHECK(f->exit_code == 6);
  auto c = Classify(*f);
  CHECK(c.reason == FailureReason::kDataError);
  CHECK_THAT(c.message, Contains("no shards"));
  CHECK(c.last_step == 0);

  SECTION("a restarted container's previous run holds the failure") {
    auto& cs = pod["status"]["containerStatuses"][0];
    cs["lastState"] = cs["state"];
    cs["state"] = {{"running", {{"startedAt", "2026-12-04T10:00:00Z"}}}};
    auto again = WorkerFailureFromPod(pod, "worker");
    REQUIRE(again.has_value());
    CHECK(again->exit_code == 6);
  }
  SECTION("a running pod has nothing to classify") {
    pod["status"]["containerStatuses"][0]["state"] = {{"running", json::object()}};
    CHECK_FALSE(WorkerFailureFromPod(pod).has_value());
  }
  SECTION("a preempted pod, still terminating") {
    pod["status"]["containerStatuses"][0]["state"] = {{"running", json::object()}};
    pod["status"]["conditions"].push_back(
        {{"type", "DisruptionTarget"}, {"status", "True"}, {"reason", "PreemptionByScheduler"}});
    auto preempted = WorkerFailureFromPod(pod);
    REQUIRE(preempted.has_value());
    CHECK(Classify(*preempted).reason == FailureReason::kPreempted);
  }
  SECTION("OOMKilled") {
    pod["status"]["containerStatuses"][0]["state"]["terminated"] = {{"exitCode", 137},
                                                                    {"reason", "OOMKilled"}};
    CHECK(Classify(*WorkerFailureFromPod(pod)).reason == FailureReason::kOOMKilled);
  }
  SECTION("a failed init container (kiln-worker prepare) holds the failure") {
    pod["status"]["phase"] = "Failed";
    pod["status"]["containerStatuses"][0]["state"] = {{"waiting", {{"reason", "PodInitializing"}}}};
    pod["status"]["initContainerStatuses"] = {
        {{"name", "prepare"}, {"state", {{"terminated", {{"exitCode", 0}}}}}},
        {{"name", "fetch"}, {"state", {{"terminated", {{"exitCode", 6}, {"reason", "Error"}}}}}}};
    auto prepare = WorkerFailureFromPod(pod, "worker");
    REQUIRE(prepare.has_value());
    CHECK(prepare->exit_code == 6);
    CHECK(Classify(*prepare).reason == FailureReason::kDataError);
  }
  SECTION("another container's name finds nothing") {
    CHECK_FALSE(WorkerFailureFromPod(pod, "sidecar").has_value());
  }
}

}  // namespace
}  // namespace kiln::trainingjob
