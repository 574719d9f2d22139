// The TrainingJob reconciler against an in-memory API server that is both the
// hub and its one member cluster (two 8-GPU nodes), a fixed clock and a fake
// progress reader: each test drives reconciles by hand and plays the kubelet
// by writing the pods' states.
#include "operator/controllers/trainingjob/reconciler.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include <catch2/catch.hpp>
#include <prometheus/text_serializer.h>

#include "base/time_format.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/fleet/capacity_view.h"
#include "tests/operator/fleet/test_objects.h"
#include "tests/support/fake_api_server.h"
#include "tests/support/test_member.h"

namespace kiln::trainingjob {
namespace {

using kiln::testing::FakeApiServer;
using kiln::testing::TestMember;
using nlohmann::json;
using std::chrono::seconds;

constexpr const char* kNs = "team";
constexpr const char* kMember = "m1";

std::unique_ptr<kube::Client> ClientOf(FakeApiServer& api) {
  return std::make_unique<kube::Client>(kube::RestConfig{.server = "https://fake"},
                                        kube::ClientOptions{.qps = 0, .max_retries = 0},
                                        api.Transport(), RealClock::Get());
}

class FakeProgress final : public ProgressReader {
 public:
  StatusOr<TrainingProgress> Read(fleet::Member& member, const std::string& ns,
                                  const std::string& pod, int32_t port) override {
    reads.push_back(member.name() + " " + ns + "/" + pod + ":" + std::to_string(port));
    return answer;
  }
  StatusOr<TrainingProgress> answer = Status::Unavailable("no progress yet");
  std::vector<std::string> reads;
};

json Job(const std::string& name, int replicas) {
  return {{"apiVersion", "kiln.dev/v1alpha1"},
          {"kind", "TrainingJob"},
          {"metadata", {{"name", name}, {"namespace", kNs}, {"generation", 1}}},
          {"spec",
           {{"model",
             {{"architecture", "gpt"},
              {"layers", 2},
              {"hiddenSize", 64},
              {"heads", 4},
              {"vocabSize", 257},
              {"contextLength", 64}}},
            {"data", {{"uri", "file:///data/fortunes"}}},
            {"training",
             {{"steps", 100},
              {"globalBatchSize", 8 * replicas},
              {"microBatchSize", 8},
              {"sequenceLength", 64}}},
            {"workers",
             {{"replicas", replicas},
              {"gpusPerWorker", 8},
              {"image", "ghcr.io/kiln-dev/kiln-worker:0.1.0"}}},
            {"checkpoint", {{"uri", "file:///checkpoints/" + name}}},
            {"failurePolicy", {{"maxRestarts", 3}, {"backoff", {{"initial", "1s"}}}}}}}};
}

// The hub, one member on the same API server, two 8-GPU nodes.
class Harness {
 public:
  explicit Harness(std::chrono::milliseconds resync = seconds(3))
      : hub_(ClientOf(server)), member_(std::make_shared<TestMember>(kMember, server)) {
    view_->UpsertCluster({.name = kMember});
    for (const char* n : {"n0", "n1"}) AddNode(fleet::testing::GpuNode(n, "z-a", "r-0", "nvl-0"));
    members_.Put(kMember, member_, 1);
    options_.volume = {
        .claim_name = "", .host_path = "/srv/checkpoints", .mount_path = "/checkpoints"};
    options_.resync = resync;
    options_.progress_reader = &progress;
    options_.now = [this] { return now; };
    options_.metrics = &metrics;
    reconciler_ =
        std::make_unique<TrainingJobReconciler>(*hub_, members_, *view_, &events_, options_);
  }

  testing::TestMember& member() { return *member_; }
  void AddNode(const json& node) {
    server.Put("nodes", node);
    member_->nodes_.Put(*server.Object("nodes", "", node["metadata"]["name"]));
    view_->OnNode(kMember, node);
  }
  // Node `name`'s Ready condition turns `ready` ("False", "Unknown"), or
  // the node is deleted (""), as m1's node informer sees it.
  void SetNodeReady(const std::string& name, const std::string& ready) {
    if (ready.empty()) {
      server.Remove("nodes", "", name);
      member_->nodes_.Delete("", name);
      return;
    }
    json node = *server.Object("nodes", "", name);
    node["status"]["conditions"] = {{{"type", "Ready"}, {"status", ready}}};
    server.Put("nodes", node);
    member_->nodes_.Put(*server.Object("nodes", "", name));
    view_->OnNode(kMember, node);
  }
  // The capacity view the reconciler places on and holds its decisions in.
  fleet::CapacityView& view() { return *view_; }
  // Plays m1's pod informer: the view sees every pod there as it is now.
  void Inform() {
    for (const json& p : server.Objects("pods", kNs)) view_->OnPod(kMember, p);
  }
  // A new operator (restarted, or newly elected): an empty capacity view
  // filled by its informers' first lists, a new reconciler; only the API
  // state is left of the old one.
  void RestartOperator() {
    reconciler_.reset();
    view_ = std::make_unique<fleet::CapacityView>();
    view_->UpsertCluster({.name = kMember});
    for (const json& n : server.Objects("nodes", "")) view_->OnNode(kMember, n);
    Inform();
    reconciler_ =
        std::make_unique<TrainingJobReconciler>(*hub_, members_, *view_, &events_, options_);
  }

  StatusOr<runtime::Result> Reconcile(const std::string& name) {
    return reconciler_->Reconcile(Context(), {kNs, name});
  }
  // Reconciles until the job's phase is `phase` (at most 10 times).
  void ReconcileUntil(const std::string& name, const std::string& phase) {
    for (int i = 0; i < 10 && JobStatus(name).value("phase", "") != phase; ++i) {
      auto r = Reconcile(name);
      REQUIRE(r.ok());
    }
    REQUIRE(JobStatus(name).value("phase", "") == phase);
  }
  json JobStatus(const std::string& name) {
    auto j = server.Object("trainingjobs", kNs, name);
    return j ? j->value("status", json::object()) : json::object();
  }
  std::vector<json> Pods(const std::string& attempt = "") {
    std::vector<json> out;
    for (auto& p : server.Objects("pods", kNs)) {
      if (attempt.empty() || p["metadata"]["labels"][kAttemptLabel] == attempt) out.push_back(p);
    }
    return out;
  }
  // A second member, m2, on an API server of its own (server2) with two
  // 8-GPU nodes; filled before m1 when its priority is higher.
  void AddSecondMember(int32_t priority) {
    member2_ = std::make_shared<TestMember>("m2", server2);
    SetCluster("m2", true, priority);
    for (const char* n : {"n2", "n3"}) {
      const json node = fleet::testing::GpuNode(n, "z-b", "r-1", "nvl-1");
      server2.Put("nodes", node);
      member2_->nodes_.Put(*server2.Object("nodes", "", n));
      view_->OnNode("m2", node);
    }
    members_.Put("m2", member2_, 2);
  }
  // The member's connection is gone from the registry (as in a newly
  // started operator, before the MemberCluster controller connects it).
  void Disconnect(const std::string& name) { members_.Remove(name); }
  // What the MemberCluster controller tells the capacity view of a member.
  void SetCluster(const std::string& name, bool reachable, int32_t priority) {
    view_->UpsertCluster({.name = name, .reachable = reachable, .priority = priority});
  }
  // Plays the kubelet: the pod runs and is ready on the node it asks for
  // (in `api`, the API server of the member it is in).
  void SetRunning(json pod) { SetRunning(std::move(pod), server); }
  void SetRunning(json pod, FakeApiServer& api) {
    pod["spec"]["nodeName"] =
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
           ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0];
    pod["status"] = {{"phase", "Running"},
                     {"conditions", {{{"type", "Ready"}, {"status", "True"}}}}};
    api.Put("pods", pod);
  }
  void SetExited(json pod, int exit_code, const std::string& message = "") {
    json terminated = {{"exitCode", exit_code},
                       {"reason", exit_code == 0 ? "Completed" : "Error"},
                       {"message", message}};
    json container = {{"name", kWorkerContainer}, {"state", {{"terminated", terminated}}}};
    pod["status"] = {{"phase", exit_code == 0 ? "Succeeded" : "Failed"},
                     {"containerStatuses", json::array({container})}};
    server.Put("pods", pod);
  }
  Status CreateJob(const json& job) {
    return hub_->Create(api::v1alpha1::kTrainingJobs, kNs, job).status();
  }
  // Creates `job`, runs it to Running with every worker ready.
  void StartRunning(const json& job) {
    const std::string name = job["metadata"]["name"];
    REQUIRE(CreateJob(job).ok());
    ReconcileUntil(name, "Scheduled");
    REQUIRE(Reconcile(name).ok());  // Creates the gang.
    for (auto& p : Pods()) SetRunning(p);
    ReconcileUntil(name, "Running");
  }

  // The reasons of the Events recorded so far, in order.
  std::vector<std::string> EventReasons() {
    REQUIRE(events_.Flush(seconds(5)));
    std::vector<json> events = server.Objects("events", kNs);
    std::sort(events.begin(), events.end(), [](const json& a, const json& b) {
      return std::stoll(a["metadata"]["resourceVersion"].get<std::string>()) <
             std::stoll(b["metadata"]["resourceVersion"].get<std::string>());
    });
    std::vector<std::string> reasons;
    for (const auto& e : events) reasons.push_back(e.value("reason", ""));
    return reasons;
  }
  std::string Scrape() { return prometheus::TextSerializer().Serialize(registry_.Collect()); }

  FakeApiServer server;
  FakeApiServer server2;  // m2's, once AddSecondMember made it.
  FakeProgress progress;
  std::chrono::system_clock::time_point now = std::chrono::system_clock::from_time_t(1'800'000'000);

 private:
  std::unique_ptr<kube::Client> hub_;
  runtime::EventRecorder events_{*hub_, {}};
  prometheus::Registry registry_;

 public:
  TrainingJobMetrics metrics{registry_};

 private:
  std::shared_ptr<TestMember> member_;
  std::shared_ptr<TestMember> member2_;
  fleet::Members members_;
  std::unique_ptr<fleet::CapacityView> view_ = std::make_unique<fleet::CapacityView>();
  TrainingJobReconcilerOptions options_;
  std::unique_ptr<TrainingJobReconciler> reconciler_;
};

TEST_CASE("a job is placed, its gang created and run", "[trainingjob][reconciler]") {
  Harness h;
  h.StartRunning(Job("run", 2));
  const json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["readyWorkers"] == 2);
  CHECK(s["placement"][0]["cluster"] == kMember);
  CHECK(h.Pods().size() == 2);
  for (const auto& p : h.Pods()) CHECK_FALSE(p["spec"].contains("schedulingGates"));
}

TEST_CASE("a running job's status shows rank 0's progress, read at most every interval",
          "[trainingjob][reconciler][progress]") {
  Harness h;
  TrainingProgress p;
  p.step = 120;
  p.loss = 2.5;
  p.validation_loss = 2.75;
  p.tokens_per_second = 6000;
  p.last_checkpoint = api::v1alpha1::CheckpointRef{.step = 100,
                                                   .uri = "file:///checkpoints/run/step-100",
                                                   .time = "2027-01-15T08:00:00Z",
                                                   .loss = 2.6};
  h.progress.answer = p;
  h.StartRunning(Job("run", 2));
  REQUIRE(h.progress.reads.size() == 1);
  CHECK(h.progress.reads[0] == "m1 team/run-0-0:9400");  // Rank 0, its metrics port.
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["step"] == 120);
  CHECK(s["loss"] == 2.5);
  CHECK(s["validationLoss"] == 2.75);
  CHECK(s["tokensPerSecond"] == 6000);
  CHECK(s["lastCheckpoint"]["step"] == 100);
  CHECK(s["lastCheckpoint"]["uri"] == "file:///checkpoints/run/step-100");

  // Within the interval (15 s) no new read; after it, the new values.
  h.now += seconds(10);
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.progress.reads.size() == 1);
  h.now += seconds(6);
  p.step = 180;
  p.loss = 2.25;
  p.validation_loss.reset();  // Not reported by this worker yet: the last one stays.
  h.progress.answer = p;
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.progress.reads.size() == 2);
  s = h.JobStatus("run");
  CHECK(s["step"] == 180);
  CHECK(s["loss"] == 2.25);
  CHECK(s["validationLoss"] == 2.75);

  // A failed read leaves the status as it was.
  h.now += seconds(16);
  h.progress.answer = Status::Unavailable("proxy: pod not ready");
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.progress.reads.size() == 3);
  CHECK(h.JobStatus("run")["step"] == 180);
}

TEST_CASE("a finished job's status holds rank 0's final loss and checkpoint, not the last read",
          "[trainingjob][reconciler][progress]") {
  Harness h;
  TrainingProgress p;
  p.step = 120;
  p.loss = 2.5;
  p.last_checkpoint = api::v1alpha1::CheckpointRef{.step = 100, .uri = "s3://b/run/step-100"};
  h.progress.answer = p;
  h.StartRunning(Job("run", 2));
  REQUIRE(h.JobStatus("run")["loss"] == 2.5);
  // Rank 0's termination message, as kiln-worker train writes it.
  const json final_message = {
      {"exitCode", 0},
      {"reason", "Success"},
      {"message", "training finished"},
      {"lastStep", 100},
      {"progress",
       {{"step", 100},
        {"targetSteps", 100},
        {"loss", 1.875},
        {"validationLoss", 2.125},
        {"lastCheckpoint",
         {{"step", 100}, {"uri", "s3://b/run/step-00000100.ckpt"}, {"loss", 1.875}}}}}};
  h.SetExited(*h.server.Object("pods", kNs, "run-0-0"), 0, final_message.dump());
  h.SetExited(*h.server.Object("pods", kNs, "run-0-1"), 0, final_message.dump());
  h.ReconcileUntil("run", "Succeeded");
  const json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["loss"] == 1.875);
  CHECK(s["validationLoss"] == 2.125);
  CHECK(s["lastCheckpoint"]["step"] == 100);
  CHECK(s["lastCheckpoint"]["uri"] == "s3://b/run/step-00000100.ckpt");
  CHECK(s["step"] == 100);  // spec.training.steps.
}

TEST_CASE("a restart resumes from the checkpoint rank 0 wrote on its way out",
          "[trainingjob][reconciler][progress]") {
  Harness h;
  TrainingProgress p;
  p.step = 42;
  p.last_checkpoint = api::v1alpha1::CheckpointRef{.step = 40, .uri = "file:///checkpoints/s40"};
  h.progress.answer = p;
  h.StartRunning(Job("run", 2));
  // Rank 0 saved at step 47 after the last progress read (40), then
  // failed; its termination message says so.
  h.SetExited(
      *h.server.Object("pods", kNs, "run-0-0"), 4,
      json{{"exitCode", 4},
           {"reason", "CollectiveTimeout"},
           {"message", "peer gone"},
           {"lastStep", 47},
           {"progress",
            {{"step", 47}, {"lastCheckpoint", {{"step", 47}, {"uri", "file:///checkpoints/s47"}}}}}}
          .dump());
  REQUIRE(h.Reconcile("run").ok());
  const json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Restarting");
  CHECK(s["restartHistory"][0]["failedAtStep"] == 47);
  CHECK(s["restartHistory"][0]["resumedFromStep"] == 47);
  CHECK(s["lastCheckpoint"]["uri"] == "file:///checkpoints/s47");
}

TEST_CASE("a diverged run restarts as a rewind: before its newest checkpoint, past its data",
          "[trainingjob][reconciler][policy]") {
  Harness h;
  TrainingProgress p;
  p.step = 75;
  p.last_checkpoint = api::v1alpha1::CheckpointRef{.step = 70, .uri = "file:///checkpoints/s70"};
  h.progress.answer = p;
  h.StartRunning(Job("run", 2));
  h.SetExited(*h.server.Object("pods", kNs, "run-0-1"), 5,
              R"({"exitCode":5,"reason":"NumericsFault","message":"loss spiked","lastStep":77})");
  REQUIRE(h.Reconcile("run").ok());
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Restarting");
  const json& rec = s["restartHistory"][0];
  CHECK(rec["reason"] == "LossDiverged");
  CHECK(rec["failedAtStep"] == 77);
  CHECK(rec["rewindBeforeStep"] == 70);
  CHECK_FALSE(rec.contains("resumedFromStep"));  // Not known until the worker rewinds.
  h.now += seconds(5);                           // Past the backoff.
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  const auto pods = h.Pods("1");
  REQUIRE(pods.size() == 2);
  for (const auto& pod : pods) {
    const json& args = pod["spec"]["containers"][0]["args"];
    INFO(args.dump());
    CHECK(std::find(args.begin(), args.end(), "--rewind-before-step=70") != args.end());
    CHECK(std::find(args.begin(), args.end(), "--skip-data-through-step=77") != args.end());
  }
}

TEST_CASE("only a terminated worker's JSON termination message with progress is final progress",
          "[trainingjob][progress]") {
  auto pod = [](const json& state) {
    return json{
        {"status",
         {{"containerStatuses", json::array({{{"name", kWorkerContainer}, {"state", state}}})}}}};
  };
  const json with = {{"progress", {{"step", 9}, {"loss", 1.5}}}};
  auto got = FinalProgress(pod({{"terminated", {{"exitCode", 0}, {"message", with.dump()}}}}),
                           kWorkerContainer);
  REQUIRE(got);
  CHECK(got->step == 9);
  CHECK(got->loss == 1.5);
  CHECK_FALSE(FinalProgress(pod({{"running", json::object()}}), kWorkerContainer));
  CHECK_FALSE(FinalProgress(pod({{"terminated", {{"message", "plain text"}}}}), kWorkerContainer));
  CHECK_FALSE(
      FinalProgress(pod({{"terminated", {{"message", R"({"lastStep":3})"}}}}), kWorkerContainer));
  CHECK_FALSE(FinalProgress(pod({{"terminated", {{"message", R"({"progress":{"loss":"x"}})"}}}}),
                            kWorkerContainer));
  CHECK_FALSE(FinalProgress(pod({{"terminated", {{"message", with.dump()}}}}), "other"));
  CHECK_FALSE(FinalProgress(json(), kWorkerContainer));
}

TEST_CASE("the progress body of kiln-worker parses, and nonsense does not",
          "[trainingjob][progress]") {
  auto p = ParseProgress(
      R"({"step":150,"targetSteps":500,"loss":2.5,"validationLoss":2.75,"tokensPerSecond":6000,)"
      R"("lastCheckpoint":{"step":150,"uri":"file:///c/step-150","time":"2027-01-15T08:00:00Z",)"
      R"("loss":2.5}})");
  REQUIRE(p.ok());
  CHECK(p->step == 150);
  CHECK(p->loss == 2.5);
  CHECK(p->validation_loss == 2.75);
  CHECK(p->tokens_per_second == 6000);
  REQUIRE(p->last_checkpoint);
  CHECK(p->last_checkpoint->uri == "file:///c/step-150");
  CHECK(p->last_checkpoint->time == "2027-01-15T08:00:00Z");
  auto fresh = ParseProgress(R"({"step":0,"targetSteps":500})");
  REQUIRE(fresh.ok());
  CHECK_FALSE(fresh->loss);
  CHECK_FALSE(fresh->last_checkpoint);
  CHECK(ParseProgress("<html>").status().code() == StatusCode::kInvalidArgument);
  CHECK(ParseProgress(R"({"loss":1})").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("the pod-proxy progress reader asks the member API server for rank 0's /progress",
          "[trainingjob][progress]") {
  FakeApiServer api;
  std::string asked;
  api.SetProxy([&](const std::string& ns, const std::string& pod, const std::string& port,
                   const std::string& path) {
    asked = ns + " " + pod + " " + port + " " + path;
    return kube::HttpResponse{200, {}, R"({"step":7,"targetSteps":10,"loss":3.5})"};
  });
  TestMember member("m1", api);
  PodProxyProgressReader reader;
  auto p = reader.Read(member, "team", "run-0-0", 9400);
  REQUIRE(p.ok());
  CHECK(asked == "team run-0-0 9400 /progress");
  CHECK(p->step == 7);
  CHECK(p->loss == 3.5);
  api.SetProxy([](const std::string&, const std::string&, const std::string&, const std::string&) {
    return kube::HttpResponse{503, {}, "error trying to reach service"};
  });
  CHECK_FALSE(reader.Read(member, "team", "run-0-0", 9400).ok());

  // Within the caller's Context: a reconcile out of time asks nothing.
  int asks = 0;
  api.SetProxy([&](const std::string&, const std::string&, const std::string&, const std::string&) {
    ++asks;
    return kube::HttpResponse{200, {}, R"({"step":7})"};
  });
  {
    ScopedContext done(Context({}, std::chrono::steady_clock::now() - seconds(1)));
    CHECK(reader.Read(member, "team", "run-0-0", 9400).status().code() ==
          StatusCode::kDeadlineExceeded);
  }
  CHECK(asks == 0);
  CHECK(reader.Read(member, "team", "run-0-0", 9400).ok());
  CHECK(asks == 1);
}

TEST_CASE("a failure a rule ignores neither restarts nor fails the job, nor hides another",
          "[trainingjob][reconciler][policy]") {
  Harness h;
  json job = Job("run", 2);
  job["spec"]["failurePolicy"]["rules"] = {
      {{"action", "Ignore"}, {"onExitCodes", {{"operator", "In"}, {"values", {42}}}}}};
  h.StartRunning(job);

  // Rank 0 ends with exit 42: ignored. Nothing is deleted or restarted.
  h.SetExited(*h.server.Object("pods", kNs, "run-0-0"), 42);
  REQUIRE(h.Reconcile("run").ok());
  REQUIRE(h.Reconcile("run").ok());
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Running");
  CHECK(s.value("restarts", 0) == 0);
  CHECK_FALSE(s.contains("restartHistory"));
  CHECK(h.Pods("0").size() == 2);

  SECTION("the other worker's real failure still restarts the gang") {
    h.SetExited(*h.server.Object("pods", kNs, "run-0-1"), 4);  // CollectiveTimeout.
    REQUIRE(h.Reconcile("run").ok());
    s = h.JobStatus("run");
    CHECK(s["phase"] == "Restarting");
    CHECK(s["restarts"] == 1);
    CHECK(s["restartHistory"][0]["reason"] == "CollectiveTimeout");
  }
  SECTION("the other worker finishing completes the job") {
    h.SetExited(*h.server.Object("pods", kNs, "run-0-1"), 0);
    REQUIRE(h.Reconcile("run").ok());
    s = h.JobStatus("run");
    CHECK(s["phase"] == "Succeeded");
    CHECK(s["step"] == 100);  // spec.training.steps: all done, whatever progress last said.
    CHECK_THAT(s["conditions"].dump(), Catch::Contains("1 ended with an ignored failure"));
    const auto reasons = h.EventReasons();
    CHECK(std::count(reasons.begin(), reasons.end(), "FailureIgnored") == 1);
    CHECK(reasons.back() == "Succeeded");
  }
}

TEST_CASE("repeated GPU faults on one node quarantine it: tainted, listed, avoided, then freed",
          "[trainingjob][reconciler][quarantine]") {
  Harness h;  // Two nodes: the gang of two needs both.
  json job = Job("run", 2);
  job["spec"]["failurePolicy"]["nodeQuarantine"] = {{"faults", 2}, {"window", "1h"}};
  h.StartRunning(job);
  const std::string bad = "n1";
  const std::string gpu_fault =
      R"({"exitCode":3,"reason":"DeviceFault","message":"Xid 79: GPU has fallen off the bus"})";
  // The rank on n1 fails with a GPU fault; the gang restarts.
  auto fail_on_bad = [&] {
    for (const auto& p : h.Pods()) {
      if (p["spec"].value("nodeName", "") == bad) h.SetExited(p, 3, gpu_fault);
    }
    REQUIRE(h.Reconcile("run").ok());
    REQUIRE(h.JobStatus("run")["phase"] == "Restarting");
    h.now += seconds(5);  // Past the backoff.
  };
  fail_on_bad();
  CHECK(h.JobStatus("run")["restartHistory"][0]["reason"] == "GPUFault");
  CHECK_FALSE(h.JobStatus("run").contains("quarantinedNodes"));  // One fault is not enough.
  CHECK_FALSE((*h.server.Object("nodes", "", bad))["spec"].contains("taints"));
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  for (auto& p : h.Pods()) h.SetRunning(p);
  h.ReconcileUntil("run", "Running");

  fail_on_bad();  // The second fault within the hour.
  json s = h.JobStatus("run");
  INFO(s.dump());
  REQUIRE(s["quarantinedNodes"] == json::array({std::string(kMember) + "/" + bad}));
  const json node = *h.server.Object("nodes", "", bad);
  REQUIRE(node["spec"]["taints"].size() == 1);
  const json taint = node["spec"]["taints"][0];
  CHECK(taint["key"] == "kiln.dev/quarantined");
  CHECK(taint["effect"] == "NoSchedule");
  // Its value: the end of the quarantine, an hour after the first fault.
  const auto first_fault = ParseRfc3339(s["restartHistory"][0]["time"].get<std::string>());
  REQUIRE(first_fault.ok());
  CHECK(std::stoll(taint["value"].get<std::string>()) ==
        std::chrono::duration_cast<seconds>(first_fault->time_since_epoch()).count() + 3600);

  const auto reasons = h.EventReasons();
  CHECK(std::count(reasons.begin(), reasons.end(), "NodeQuarantined") == 1);
  CHECK_THAT(h.Scrape(), Catch::Contains("kiln_trainingjob_node_quarantines_total 1\n"));
  CHECK_THAT(h.Scrape(),
             Catch::Contains("kiln_trainingjob_restarts_total{reason=\"GPUFault\"} 2\n"));

  // The one node left cannot hold the gang: this job avoids n1.
  REQUIRE(h.Reconcile("run").ok());
  s = h.JobStatus("run");
  CHECK(s["phase"] == "Restarting");
  CHECK_THAT(s["conditions"].dump(), Catch::Contains("1 avoided by the job"));
  // A new node: the gang runs on n0 and n2.
  h.AddNode(fleet::testing::GpuNode("n2", "z-a", "r-0", "nvl-0"));
  h.ReconcileUntil("run", "Scheduled");
  const json placed = h.JobStatus("run");  // Kept: a range-for over a temporary's part dangles.
  for (const auto& n : placed["placement"][0]["nodes"]) CHECK(n != bad);
  // Any other job avoids it too, through the taint in the fleet's snapshot
  // (fed here as the member's node informer would): three workers no longer
  // fit on the three nodes.
  h.AddNode(*h.server.Object("nodes", "", bad));
  REQUIRE(h.CreateJob(Job("other", 3)).ok());
  REQUIRE(h.Reconcile("other").ok());
  REQUIRE(h.Reconcile("other").ok());
  const json other = h.JobStatus("other");
  CHECK(other["phase"] == "Pending");
  CHECK_THAT(other["conditions"].dump(), Catch::Contains("1 quarantined"));

  // Once the window has passed, the job may use n1 again.
  h.now += std::chrono::hours(1);
  REQUIRE(h.Reconcile("run").ok());
  CHECK_FALSE(h.JobStatus("run").contains("quarantinedNodes"));
}

TEST_CASE("a finished job with ttlSecondsAfterFinished is deleted that long after it finished",
          "[trainingjob][reconciler][ttl]") {
  Harness h;
  json job = Job("run", 2);
  job["spec"]["ttlSecondsAfterFinished"] = 60;
  h.StartRunning(job);
  for (const auto& p : h.Pods()) h.SetExited(p, 0);
  REQUIRE(h.Reconcile("run").ok());
  REQUIRE(h.JobStatus("run")["phase"] == "Succeeded");
  auto r = h.Reconcile("run");
  REQUIRE(r.ok());
  CHECK(r->requeue_after == std::chrono::minutes(1));
  h.now += seconds(59);
  r = h.Reconcile("run");
  REQUIRE(r.ok());
  CHECK(r->requeue_after == seconds(1));
  CHECK(h.server.Object("trainingjobs", kNs, "run"));
  h.now += seconds(1);
  REQUIRE(h.Reconcile("run").ok());
  // Deleted: the finalizer holds it while the workers are cleaned up.
  REQUIRE(h.server.Object("trainingjobs", kNs, "run"));
  CHECK((*h.server.Object("trainingjobs", kNs, "run"))["metadata"].contains("deletionTimestamp"));
  REQUIRE(h.Reconcile("run").ok());  // Workers gone: the finalizer comes off.
  REQUIRE(h.Reconcile("run").ok());
  h.server.Remove("trainingjobs", kNs, "run");  // As the API server does without finalizers.
  CHECK(h.Pods().empty());
  CHECK(h.Reconcile("run").ok());  // Not found: done.

  SECTION("without ttlSecondsAfterFinished a finished job stays") {
    Harness k;
    k.StartRunning(Job("keep", 2));
    for (const auto& p : k.Pods()) k.SetExited(p, 0);
    REQUIRE(k.Reconcile("keep").ok());
    k.now += std::chrono::hours(1000);
    auto kept = k.Reconcile("keep");
    REQUIRE(kept.ok());
    CHECK(kept->requeue_after == std::chrono::milliseconds(0));
    CHECK_FALSE(
        (*k.server.Object("trainingjobs", kNs, "keep"))["metadata"].contains("deletionTimestamp"));
  }
}

TEST_CASE("suspend stops the gang, and resuming re-places it in the same attempt",
          "[trainingjob][reconciler][suspend]") {
  Harness h;
  h.StartRunning(Job("run", 2));
  json job = *h.server.Object("trainingjobs", kNs, "run");
  job["spec"]["suspend"] = true;
  h.server.Put("trainingjobs", job);
  REQUIRE(h.Reconcile("run").ok());
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Suspended");
  CHECK(s["readyWorkers"] == 0);
  CHECK_FALSE(s.contains("placement"));
  CHECK(h.Pods().empty());
  CHECK_THAT(s["conditions"].dump(),
             Catch::Contains(R"("reason":"Suspended","status":"False","type":"Running")"));
  bool graceful = false;
  for (const auto& r : h.server.requests()) {
    graceful |= r.rfind("DELETE /api/v1/namespaces/team/pods/run-0-", 0) == 0;
  }
  CHECK(graceful);

  job = *h.server.Object("trainingjobs", kNs, "run");
  job["spec"]["suspend"] = false;
  h.server.Put("trainingjobs", job);
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.Pods("0").size() == 2);  // Attempt 0 again: a suspension is no restart.
  s = h.JobStatus("run");
  CHECK(s.value("restarts", 0) == 0);
  CHECK_THAT(s["conditions"].dump(),
             Catch::Contains(R"("reason":"Resumed","status":"False","type":"Suspended")"));
}

// A worker pod of attempt 0 with `world` ranks accumulating `accumulation`
// micro-batches each.
bool SizedAs(const json& pod, int world, int accumulation) {
  const std::string text = pod.dump();
  return text.find(R"({"name":"WORLD_SIZE","value":")" + std::to_string(world) + "\"}") !=
             std::string::npos &&
         text.find("--grad-accum=" + std::to_string(accumulation) + "\"") != std::string::npos;
}

json ConditionOf(const json& status, const std::string& type) {
  for (const auto& c : status.value("conditions", json::array())) {
    if (c["type"] == type) return c;
  }
  return nullptr;
}

TEST_CASE("an elastic job grows into freed capacity and kubectl scale shrinks it",
          "[trainingjob][reconciler][elastic]") {
  Harness h;
  // Asks for 4 workers, may run with 1; 4 micro-batches per step in all.
  json job = Job("run", 4);
  job["spec"]["elastic"] = {{"minReplicas", 1}, {"maxReplicas", 4}};
  REQUIRE(h.CreateJob(job).ok());
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  // The fleet has two nodes: it starts with 2, each accumulating 2.
  REQUIRE(h.Pods().size() == 2);
  for (const auto& p : h.Pods()) CHECK(SizedAs(p, 2, 2));
  for (auto& p : h.Pods()) h.SetRunning(p);
  h.ReconcileUntil("run", "Running");
  CHECK(h.JobStatus("run")["replicas"] == 2);
  // No room to grow yet: looked at after grow_interval, and said.
  h.now += seconds(31);
  REQUIRE(h.Reconcile("run").ok());
  json s = h.JobStatus("run");
  INFO(s.dump());
  REQUIRE(ConditionOf(s, "Resizing").is_object());
  CHECK(ConditionOf(s, "Resizing")["reason"] == "WaitingForCapacity");
  CHECK_THAT(ConditionOf(s, "Resizing")["message"].get<std::string>(),
             Catch::Contains("runs 2 of the 4 workers asked for"));
  CHECK(s["phase"] == "Running");

  // Two more nodes: the next look grows the gang to 4, in the same attempt.
  h.AddNode(fleet::testing::GpuNode("n2", "z-a", "r-0", "nvl-0"));
  h.AddNode(fleet::testing::GpuNode("n3", "z-a", "r-0", "nvl-0"));
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.JobStatus("run")["phase"] == "Running");  // Not before the interval.
  h.now += seconds(31);
  REQUIRE(h.Reconcile("run").ok());
  s = h.JobStatus("run");
  CHECK(s["phase"] == "Resizing");
  REQUIRE(ConditionOf(s, "Resizing").is_object());
  CHECK(ConditionOf(s, "Resizing")["status"] == "True");
  CHECK(ConditionOf(s, "Resizing")["reason"] == "ScaleUp");
  bool deleted = false;
  for (const auto& r : h.server.requests()) {
    deleted |= r.rfind("DELETE /api/v1/namespaces/team/pods/run-0-", 0) == 0;
  }
  CHECK(deleted);
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  REQUIRE(h.Pods("0").size() == 4);
  for (const auto& p : h.Pods()) CHECK(SizedAs(p, 4, 1));
  for (auto& p : h.Pods()) h.SetRunning(p);
  h.ReconcileUntil("run", "Running");
  s = h.JobStatus("run");
  CHECK(s["replicas"] == 4);
  CHECK(s.value("restarts", 0) == 0);  // A resize is no restart.
  CHECK_FALSE(s.contains("restartHistory"));
  CHECK(ConditionOf(s, "Resizing")["status"] == "False");
  CHECK(ConditionOf(s, "Resizing")["reason"] == "Resized");

  // kubectl scale --replicas=1: shrinks at once, 1 worker accumulating 4.
  job = *h.server.Object("trainingjobs", kNs, "run");
  job["spec"]["workers"]["replicas"] = 1;
  h.server.Put("trainingjobs", job);
  REQUIRE(h.Reconcile("run").ok());
  s = h.JobStatus("run");
  CHECK(s["phase"] == "Resizing");
  CHECK(ConditionOf(s, "Resizing")["reason"] == "ScaleDown");
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  REQUIRE(h.Pods().size() == 1);
  CHECK(SizedAs(h.Pods()[0], 1, 4));
  h.SetRunning(h.Pods()[0]);
  h.ReconcileUntil("run", "Running");
  CHECK(h.JobStatus("run")["replicas"] == 1);
  CHECK(h.JobStatus("run").value("restarts", 0) == 0);
  const auto reasons = h.EventReasons();
  CHECK(std::count(reasons.begin(), reasons.end(), "Resizing") == 2);
  CHECK(std::count(reasons.begin(), reasons.end(), "Resized") == 2);
}

TEST_CASE("a worker whose prepare init container fails is seen: bad data fails the job",
          "[trainingjob][reconciler][policy]") {
  Harness h;
  h.StartRunning(Job("run", 2));
  json pod = *h.server.Object("pods", kNs, "run-0-1");
  pod["status"] = {
      {"phase", "Failed"},
      {"initContainerStatuses",
       {{{"name", "prepare"},
         {"state",
          {{"terminated",
            {{"exitCode", 6}, {"reason", "Error"}, {"message", "no such corpus"}}}}}}}},
      {"containerStatuses",
       {{{"name", kWorkerContainer}, {"state", {{"waiting", {{"reason", "PodInitializing"}}}}}}}}};
  h.server.Put("pods", pod);
  REQUIRE(h.Reconcile("run").ok());
  const json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Failed");
  CHECK_THAT(s["conditions"].dump(), Catch::Contains(R"("reason":"DataError")"));
  CHECK(h.Pods().empty());

  SECTION("a failed pod with no exit recorded at all restarts the gang") {
    Harness k;
    k.StartRunning(Job("bare", 2));
    json bare = *k.server.Object("pods", kNs, "bare-0-0");
    bare["status"] = {{"phase", "Failed"}};
    k.server.Put("pods", bare);
    REQUIRE(k.Reconcile("bare").ok());
    CHECK(k.JobStatus("bare")["phase"] == "Restarting");
    CHECK(k.JobStatus("bare")["restartHistory"][0]["reason"] == "WorkerError");
  }
}

TEST_CASE("without a rule, a worker's retryable failure restarts the whole gang",
          "[trainingjob][reconciler][policy]") {
  Harness h;
  TrainingProgress progress;
  progress.step = 42;
  progress.last_checkpoint =
      api::v1alpha1::CheckpointRef{.step = 40, .uri = "file:///checkpoints/s40"};
  h.progress.answer = progress;
  h.StartRunning(Job("run", 2));
  h.now += std::chrono::milliseconds(500);  // Mid-second: the backoff counts from it.
  h.SetExited(*h.server.Object("pods", kNs, "run-0-1"), 4);
  REQUIRE(h.Reconcile("run").ok());
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Restarting");
  CHECK(s["restarts"] == 1);
  // No lastStep in a termination message: the last progress read says where
  // it was; the newest checkpoint it showed is where it resumes.
  CHECK(s["restartHistory"][0]["failedAtStep"] == 42);
  CHECK(s["restartHistory"][0]["resumedFromStep"] == 40);
  CHECK(h.Pods("0").empty());  // The whole attempt, at once.
  // The backoff (1 s) holds to the millisecond; after it the gang is placed
  // again as attempt 1.
  h.now += std::chrono::milliseconds(900);
  auto waiting = h.Reconcile("run");
  REQUIRE(waiting.ok());
  CHECK(waiting->requeue_after == std::chrono::milliseconds(100));
  CHECK(h.JobStatus("run")["phase"] == "Restarting");
  h.now += std::chrono::milliseconds(100);
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.Pods("1").size() == 2);
  h.now += std::chrono::milliseconds(1500);
  for (auto& p : h.Pods("1")) h.SetRunning(p);
  h.ReconcileUntil("run", "Running");

  // Events say what happened; metrics count the restart by reason and time
  // the recovery from the failure's detection (2.5 s on the fixed clock).
  const auto reasons = h.EventReasons();
  INFO(Catch::rangeToString(reasons));
  CHECK(reasons == std::vector<std::string>{"Scheduled", "Restarting", "Scheduled", "Recovered"});
  const std::string text = h.Scrape();
  INFO(text);
  for (const char* line : {
           "kiln_trainingjob_restarts_total{reason=\"CollectiveTimeout\"} 1\n",
           "kiln_trainingjob_recovery_seconds_count 1\n",
           "kiln_trainingjob_recovery_seconds_sum 2.5\n",
           "kiln_trainingjob_recovery_seconds_bucket{le=\"5\"} 1\n",
           "kiln_trainingjob_recovery_seconds_bucket{le=\"2\"} 0\n",
           "kiln_trainingjob_jobs{phase=\"Running\"} 1\n",
           "kiln_trainingjob_jobs{phase=\"Restarting\"} 0\n",
       }) {
    CHECK_THAT(text, Catch::Contains(line));
  }
}

// A node that fails under a running worker: nothing about the pod changes
// (its kubelet is what failed), the node's state alone restarts the gang.
TEST_CASE("a running worker's node NotReady, Unknown or deleted restarts the gang at once",
          "[trainingjob][reconciler][policy]") {
  for (const std::string state : {"False", "Unknown", ""}) {
    INFO("Ready=" << state);
    Harness h;
    h.StartRunning(Job("run", 2));
    const std::string node = (*h.server.Object("pods", kNs, "run-0-1"))["spec"]["nodeName"];
    h.SetNodeReady(node, state);
    REQUIRE(h.Reconcile("run").ok());
    json s = h.JobStatus("run");
    INFO(s.dump());
    CHECK(s["phase"] == "Restarting");
    CHECK(s["restarts"] == 1);
    const json& record = s["restartHistory"][0];
    CHECK(record["reason"] == "NodeFailure");
    CHECK(record["node"] == node);
    CHECK_THAT(record["message"].get<std::string>(),
               Catch::Contains(state == "False"     ? "is NotReady"
                               : state == "Unknown" ? "is Unknown"
                                                    : "is deleted"));
    // The whole attempt goes; the pod on the failed node without a grace
    // period (no kubelet there would finish it), the other with its own.
    CHECK(h.Pods("0").empty());
    const auto grace = h.server.delete_grace();
    CHECK(grace.at("pods/run-0-1") == 0);
    CHECK(grace.at("pods/run-0-0") == kFailedGangGraceSeconds);
  }
}

// The chaos suite's finding: a worker deleted after the gang's gates were
// lifted, before a reconcile wrote Running (or with that write lost to a
// SIGKILLed operator), was created again in the same attempt, beside workers
// that had started. It is a worker lost: the gang restarts.
TEST_CASE("a worker gone after its gang was released restarts the gang, even before Running",
          "[trainingjob][reconciler]") {
  Harness h;
  REQUIRE(h.CreateJob(Job("run", 2)).ok());
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());  // Creates the gang and lifts its gates.
  REQUIRE(h.Pods("0").size() == 2);
  for (const auto& p : h.Pods("0")) REQUIRE_FALSE(p["spec"].contains("schedulingGates"));
  REQUIRE(h.JobStatus("run").value("phase", "") == "Scheduled");
  h.SetRunning(*h.server.Object("pods", kNs, "run-0-1"));
  h.server.Remove("pods", kNs, "run-0-0");
  const bool restart_operator = GENERATE(false, true);
  if (restart_operator) h.RestartOperator();
  REQUIRE(h.Reconcile("run").ok());
  const json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s.value("restarts", 0) == 1);
  CHECK(h.server.Object("pods", kNs, "run-0-0") == std::nullopt);
}

// Before the gates are lifted no worker can have started: a pod missing
// then (the operator died between creating and lifting) is created again,
// and nothing restarts.
TEST_CASE("a worker gone while its gang is still gated is created again, with no restart",
          "[trainingjob][reconciler]") {
  Harness h;
  REQUIRE(h.CreateJob(Job("run", 2)).ok());
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  // Back to the moment between the creates and the lifting of the gates.
  for (json p : h.Pods("0")) {
    p["spec"]["schedulingGates"] = json::array({{{"name", kGangGate}}});
    h.server.Put("pods", p);
  }
  h.server.Remove("pods", kNs, "run-0-0");
  h.RestartOperator();
  REQUIRE(h.Reconcile("run").ok());
  const json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s.value("restarts", 0) == 0);
  REQUIRE(h.server.Object("pods", kNs, "run-0-0") != std::nullopt);
  for (const auto& p : h.Pods("0")) CHECK_FALSE(p["spec"].contains("schedulingGates"));
}

// The chaos suite's other finding: a gang placed on a node that had no room
// after all stayed Pending for good. Its member's scheduler refusing a
// released worker for refused_timeout places the gang again, in the same
// attempt (no restart), and says why.
TEST_CASE("a gang its member's scheduler refuses is placed again in the same attempt",
          "[trainingjob][reconciler]") {
  Harness h;
  REQUIRE(h.CreateJob(Job("run", 2)).ok());
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());  // Creates the gang and lifts its gates.
  REQUIRE(h.Pods("0").size() == 2);
  auto refuse = [&](std::chrono::seconds ago) {
    for (json p : h.Pods("0")) {
      p["status"] = {{"phase", "Pending"},
                     {"conditions",
                      {{{"type", "PodScheduled"},
                        {"status", "False"},
                        {"reason", "Unschedulable"},
                        {"message", "0/2 nodes are available: 1 Insufficient nvidia.com/gpu."},
                        {"lastTransitionTime", FormatRfc3339(h.now - ago)}}}}};
      h.server.Put("pods", p);
    }
  };
  refuse(std::chrono::seconds(10));  // Not yet for long.
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.JobStatus("run").value("phase", "") == "Scheduled");
  CHECK(h.Pods("0").size() == 2);

  // What the view missed: a pod on the refused worker's node, in the
  // member's cache but never told to the view. The refusal counts it.
  const std::string node = h.Pods(
      "0")[0]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
          ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0];
  json unseen = fleet::testing::GpuPod(kNs, "unseen", node, 8);
  unseen["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "8";
  h.member().pods_.Put(unseen);
  refuse(std::chrono::seconds(31));
  // A new operator's view is filled from the members' pods (this harness's
  // from its API server's), so it counts the pod from the start.
  const bool restart_operator = GENERATE(false, true);
  if (restart_operator) h.server.Put("pods", unseen);
  if (restart_operator) h.RestartOperator();
  REQUIRE(h.Reconcile("run").ok());  // Deletes the pods: the decision is in the condition.
  CHECK(h.Pods("0").empty());
  if (restart_operator) h.RestartOperator();
  REQUIRE(h.Reconcile("run").ok());  // Sees them gone: placed afresh next.
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(h.Pods("0").empty());
  CHECK(s.value("phase", "") == "Pending");
  CHECK_FALSE(s.contains("placement"));
  CHECK(s.value("restarts", 0) == 0);
  bool said = false;
  for (const auto& c : s["conditions"]) {
    if (c["type"] == "Scheduled") {
      CHECK(c["reason"] == "NodeRefused");
      CHECK_THAT(c.value("message", ""), Catch::Contains("Insufficient nvidia.com/gpu"));
      said = true;
    }
  }
  CHECK(said);
  const auto reasons = h.EventReasons();
  CHECK(std::count(reasons.begin(), reasons.end(), "NodeRefused") == 1);

  // The view counts the pod now: no room for the gang (without the recount
  // it would be placed on the same node again, and refused again).
  REQUIRE(h.Reconcile("run").ok());
  s = h.JobStatus("run");
  CHECK(s.value("phase", "") == "Pending");
  CHECK_THAT(s.dump(), Catch::Contains("InsufficientCapacity"));

  // The pod goes: placed again and created again, as attempt 0.
  h.member().pods_.Delete(kNs, "unseen");
  h.server.Remove("pods", kNs, "unseen");
  h.view().OnPodDeleted(kMember, unseen);
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.Pods("0").size() == 2);
  CHECK(h.JobStatus("run").value("restarts", 0) == 0);
}

// A worker deleted with its node (the pod GC's work) is a NodeFailure too.
TEST_CASE("a worker gone with its deleted node is a NodeFailure", "[trainingjob][reconciler]") {
  Harness h;
  h.StartRunning(Job("run", 2));
  const std::string node = (*h.server.Object("pods", kNs, "run-0-0"))["spec"]["nodeName"];
  h.server.Remove("pods", kNs, "run-0-0");
  h.SetNodeReady(node, "");
  REQUIRE(h.Reconcile("run").ok());
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["restartHistory"][0]["reason"] == "NodeFailure");
  CHECK(s["restartHistory"][0]["node"] == node);
}

TEST_CASE(
    "a member declared Unreachable: the gang moves at once, and the member is swept when it "
    "answers",
    "[trainingjob][reconciler][cluster-loss]") {
  Harness h;
  h.AddSecondMember(/*priority=*/10);
  REQUIRE(h.CreateJob(Job("run", 2)).ok());
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.JobStatus("run")["placement"][0]["cluster"] == "m2");
  REQUIRE(h.Reconcile("run").ok());  // Creates the gang in m2.
  // The hub's namespace did not exist in m2: kiln made it.
  REQUIRE(h.server2.Object("namespaces", "", kNs));
  CHECK(h.server2.Object("namespaces", "", kNs)->at("metadata")["labels"][api::kManagedByLabel] ==
        api::kManagedByValue);
  auto lost = h.server2.Objects("pods", kNs);
  REQUIRE(lost.size() == 2);
  for (auto& p : lost) h.SetRunning(p, h.server2);
  h.ReconcileUntil("run", "Running");

  // The MemberCluster controller declares m2 Unreachable: the whole gang
  // restarts at once (no backoff: the job's is 1 s and the clock stands
  // still), and nothing is asked of m2.
  h.SetCluster("m2", false, 10);
  const size_t asked_m2 = h.server2.requests().size();
  auto restarted = h.Reconcile("run");
  REQUIRE(restarted.ok());
  CHECK(restarted->requeue_after == std::chrono::milliseconds(1));
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Restarting");
  CHECK(s["restarts"] == 1);
  CHECK(s["restartHistory"][0]["reason"] == "ClusterUnavailable");
  CHECK(s["restartHistory"][0]["cluster"] == "m2");
  CHECK_THAT(s["restartHistory"][0]["message"].get<std::string>(),
             Catch::Contains("member cluster m2 is unreachable"));
  h.ReconcileUntil("run", "Scheduled");
  CHECK(h.JobStatus("run")["placement"][0]["cluster"] == kMember);
  REQUIRE(h.Reconcile("run").ok());
  REQUIRE(h.Pods("1").size() == 2);
  for (auto& p : h.Pods("1")) h.SetRunning(p);
  h.ReconcileUntil("run", "Running");
  CHECK(h.server2.requests().size() == asked_m2);
  CHECK(h.server2.Objects("pods", kNs).size() == 2);  // Out of reach, so still there.

  SECTION("m2 answers while the gang runs: what attempt 0 left there goes, once") {
    h.SetCluster("m2", true, 10);
    REQUIRE(h.Reconcile("run").ok());
    CHECK(h.server2.Objects("pods", kNs).empty());
    CHECK(h.server2.Objects("services", kNs).empty());
    CHECK(h.Pods("1").size() == 2);
    CHECK(h.JobStatus("run")["phase"] == "Running");
    const size_t swept = h.server2.requests().size();
    REQUIRE(h.Reconcile("run").ok());
    CHECK(h.server2.requests().size() == swept);
    const auto reasons = h.EventReasons();
    INFO(Catch::rangeToString(reasons));
    CHECK(std::count(reasons.begin(), reasons.end(), "StaleWorkersDeleted") == 1);
  }
  SECTION("the job finishes first: it keeps looking until m2 answers, then sweeps it") {
    for (auto& p : h.Pods("1")) h.SetExited(p, 0);
    h.ReconcileUntil("run", "Succeeded");
    auto waiting = h.Reconcile("run");
    REQUIRE(waiting.ok());
    CHECK(waiting->requeue_after == kLostClusterRetry);
    CHECK(h.server2.Objects("pods", kNs).size() == 2);
    h.SetCluster("m2", true, 10);
    auto done = h.Reconcile("run");
    REQUIRE(done.ok());
    CHECK(done->requeue_after == std::chrono::milliseconds(0));
    CHECK(h.server2.Objects("pods", kNs).empty());
    CHECK(h.Pods("1").size() == 2);  // The final attempt's pods stay, as a Job's do.
  }
}

TEST_CASE(
    "a member not connected yet leaves the gang alone, one whose MemberCluster is gone loses it",
    "[trainingjob][reconciler][cluster-loss]") {
  Harness h;
  h.StartRunning(Job("run", 2));
  h.server.Put("memberclusters", {{"apiVersion", "kiln.dev/v1alpha1"},
                                  {"kind", "MemberCluster"},
                                  {"metadata", {{"name", kMember}}},
                                  {"spec", {{"local", true}}}});
  h.Disconnect(kMember);
  auto waiting = h.Reconcile("run");
  REQUIRE(waiting.ok());
  CHECK(waiting->requeue_after == seconds(3));
  CHECK(h.JobStatus("run")["phase"] == "Running");
  CHECK(h.JobStatus("run").value("restarts", 0) == 0);

  SECTION("its status says Unreachable") {
    json mc = *h.server.Object("memberclusters", "", kMember);
    mc["status"] = {{"conditions", {{{"type", "Unreachable"}, {"status", "True"}}}}};
    h.server.Put("memberclusters", mc);
  }
  SECTION("it is deleted") { h.server.Remove("memberclusters", "", kMember); }
  REQUIRE(h.Reconcile("run").ok());
  const json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Restarting");
  CHECK(s["restartHistory"][0]["reason"] == "ClusterUnavailable");
}

TEST_CASE("deleting a job waits for the members it used, not for one that never connected",
          "[trainingjob][reconciler][cluster-loss]") {
  Harness h;
  h.StartRunning(Job("run", 2));
  // A MemberCluster whose kubeconfig never worked: registered, not connected.
  h.server.Put("memberclusters",
               {{"apiVersion", "kiln.dev/v1alpha1"},
                {"kind", "MemberCluster"},
                {"metadata", {{"name", "ghost"}}},
                {"status",
                 {{"conditions",
                   {{{"type", "Ready"}, {"status", "False"}, {"reason", "SecretNotFound"}}}}}}});
  auto finalizers = [&] {
    return (*h.server.Object("trainingjobs", kNs, "run"))["metadata"].value("finalizers",
                                                                            json::array());
  };
  auto remove = [&] {
    json job = *h.server.Object("trainingjobs", kNs, "run");
    job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
    h.server.Put("trainingjobs", job);
  };
  SECTION("the job ran elsewhere: its finalizer comes off") {
    remove();
    REQUIRE(h.Reconcile("run").ok());  // Deletes the pods.
    REQUIRE(h.Reconcile("run").ok());  // Sees them gone.
    CHECK(h.Pods().empty());
    CHECK(finalizers().empty());
  }
  SECTION("the job's restart history names it: the finalizer waits for it") {
    json job = *h.server.Object("trainingjobs", kNs, "run");
    job["status"]["restartHistory"] = {{{"time", "2026-01-01T00:00:00Z"},
                                        {"reason", "ClusterUnavailable"},
                                        {"message", "member cluster ghost is Unreachable"},
                                        {"cluster", "ghost"}}};
    h.server.Put("trainingjobs", job);
    remove();
    REQUIRE(h.Reconcile("run").ok());
    REQUIRE(h.Reconcile("run").ok());
    CHECK(h.Pods().empty());  // What the members that answer hold goes at once.
    CHECK_FALSE(finalizers().empty());
  }
}

// The node each rank of job `name` is placed on, from its status.
std::vector<std::string> PlacedNodes(Harness& h, const std::string& name) {
  std::vector<std::string> nodes;
  for (const json& c : h.JobStatus(name).value("placement", json::array())) {
    for (const json& n : c.value("nodes", json::array())) nodes.push_back(n);
  }
  return nodes;
}

int64_t FreeGpus(Harness& h) { return h.view().Snapshot().cluster(kMember)->free_gpus(); }

TEST_CASE("jobs placed one after the other hold their nodes until their pods are bound",
          "[trainingjob][reconciler][holds]") {
  Harness h;
  REQUIRE(h.CreateJob(Job("a", 1)).ok());
  REQUIRE(h.CreateJob(Job("b", 1)).ok());
  REQUIRE(h.CreateJob(Job("c", 1)).ok());
  h.ReconcileUntil("a", "Scheduled");
  h.ReconcileUntil("b", "Scheduled");
  REQUIRE(PlacedNodes(h, "a").size() == 1);
  REQUIRE(PlacedNodes(h, "b").size() == 1);
  // No pod exists yet: only the holds keep b off a's node.
  CHECK(h.Pods().empty());
  CHECK(PlacedNodes(h, "a") != PlacedNodes(h, "b"));
  CHECK(FreeGpus(h) == 0);
  REQUIRE(h.Reconcile("c").ok());
  CHECK(h.JobStatus("c")["phase"] == "Pending");
  CHECK_THAT(h.JobStatus("c")["conditions"].dump(), Catch::Contains("InsufficientCapacity"));

  // The gangs are created (gated, then ungated), bound and run: their pods
  // count for them instead, once each.
  REQUIRE(h.Reconcile("a").ok());
  REQUIRE(h.Reconcile("b").ok());
  h.Inform();  // Created, not bound yet: still held.
  CHECK(h.view().HeldRanks("team/a") == std::vector<int32_t>{0});
  CHECK(FreeGpus(h) == 0);
  for (auto& p : h.Pods()) h.SetRunning(p);
  h.Inform();
  CHECK(h.view().HeldRanks("team/a").empty());
  CHECK(h.view().HeldRanks("team/b").empty());
  CHECK(FreeGpus(h) == 0);
  h.ReconcileUntil("a", "Running");
  h.ReconcileUntil("b", "Running");
}

TEST_CASE("a new operator holds what the last one placed before it places anything",
          "[trainingjob][reconciler][holds]") {
  Harness h;
  REQUIRE(h.CreateJob(Job("a", 1)).ok());
  h.ReconcileUntil("a", "Scheduled");  // Decided and written; no pod made yet.
  h.RestartOperator();
  CHECK(FreeGpus(h) == 16);  // Nothing in the informers shows a's decision.

  // The new operator's first placement is of another job: a's decision
  // (read back from its status) holds its node first.
  REQUIRE(h.CreateJob(Job("b", 1)).ok());
  h.ReconcileUntil("b", "Scheduled");
  CHECK(PlacedNodes(h, "a") != PlacedNodes(h, "b"));
  CHECK(h.view().HeldRanks("team/a") == std::vector<int32_t>{0});
  CHECK(FreeGpus(h) == 0);

  // a's gang is made and bound: its pod then counts, and the hold is spent.
  REQUIRE(h.Reconcile("a").ok());
  for (auto& p : h.Pods()) {
    if (p["metadata"]["labels"][kJobNameLabel] == "a") h.SetRunning(p);
  }
  h.Inform();
  CHECK(h.view().HeldRanks("team/a").empty());
  REQUIRE(h.Reconcile("a").ok());  // Still a's node, once: not held again.
  CHECK(h.view().HeldRanks("team/a").empty());
  CHECK(FreeGpus(h) == 0);
}

TEST_CASE("a job's hold goes when its attempt is abandoned or the job deleted",
          "[trainingjob][reconciler][holds]") {
  Harness h;
  REQUIRE(h.CreateJob(Job("run", 2)).ok());
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());  // The gang is made, gated.
  CHECK(FreeGpus(h) == 0);

  SECTION("a failed worker restarts the gang: attempt 0 holds nothing, attempt 1 holds anew") {
    for (auto& p : h.Pods()) h.SetRunning(p);
    h.ReconcileUntil("run", "Running");
    h.SetExited(*h.server.Object("pods", kNs, "run-0-1"), 4);
    REQUIRE(h.Reconcile("run").ok());
    REQUIRE(h.JobStatus("run")["phase"] == "Restarting");
    CHECK(h.view().HeldRanks("team/run").empty());
    h.Inform();  // Attempt 0's pods are gone from the member.
    CHECK(FreeGpus(h) == 16);
    h.now += seconds(2);  // The backoff.
    h.ReconcileUntil("run", "Scheduled");
    CHECK(h.view().HeldRanks("team/run") == std::vector<int32_t>{0, 1});
    CHECK(FreeGpus(h) == 0);
  }
  SECTION("the job is deleted before its pods were bound") {
    auto job = h.server.Object("trainingjobs", kNs, "run");
    REQUIRE(job);
    (*job)["metadata"]["deletionTimestamp"] = "2027-01-15T08:00:00Z";
    h.server.Put("trainingjobs", *job);
    REQUIRE(h.Reconcile("run").ok());
    CHECK(h.view().HeldRanks("team/run").empty());
    CHECK(FreeGpus(h) == 16);
  }
  SECTION("the job is suspended") {
    json job = *h.server.Object("trainingjobs", kNs, "run");
    job["spec"]["suspend"] = true;
    h.server.Put("trainingjobs", job);
    REQUIRE(h.Reconcile("run").ok());
    CHECK(h.view().HeldRanks("team/run").empty());
    CHECK(FreeGpus(h) == 16);
  }
}

// `name` with spec.storage.s3 naming the Secret s3-creds, checkpoints in S3.
json S3Job(const std::string& name, int replicas) {
  json job = Job(name, replicas);
  job["spec"]["storage"] = {{"s3",
                             {{"endpoint", "http://seaweedfs.storage:8333"},
                              {"credentialsSecretRef", {{"name", "s3-creds"}}}}}};
  job["spec"]["checkpoint"]["uri"] = "s3://checkpoints/" + name;
  return job;
}

json CredentialsSecret(json data) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"name", "s3-creds"}, {"namespace", kNs}}},
          {"type", "Opaque"},
          {"data", std::move(data)}};
}

const json kKeys = {{"AWS_ACCESS_KEY_ID", "QUtJQQ=="}, {"AWS_SECRET_ACCESS_KEY", "c2VjcmV0"}};

json Condition(const json& status, const std::string& type) {
  for (const auto& c : status.value("conditions", json::array())) {
    if (c["type"] == type) return c;
  }
  return nullptr;
}

std::string SecretVolume(const json& pod) {
  for (const auto& v : pod["spec"]["volumes"]) {
    if (v["name"] == "s3-credentials") return v["secret"]["secretName"];
  }
  return "";
}

TEST_CASE("a job whose credentials Secret is missing or lacks a key starts no worker, and says so",
          "[trainingjob][reconciler][s3]") {
  Harness h;
  REQUIRE(h.CreateJob(S3Job("run", 2)).ok());
  for (int i = 0; i < 3; ++i) {
    auto r = h.Reconcile("run");
    REQUIRE(r.ok());
    CHECK(r->requeue_after == seconds(10));  // Secrets are not watched: looked at again.
  }
  json s = h.JobStatus("run");
  INFO(s.dump());
  CHECK(s["phase"] == "Pending");
  CHECK_FALSE(s.contains("placement"));
  json c = Condition(s, "CredentialsReady");
  CHECK(c["status"] == "False");
  CHECK(c["reason"] == "SecretNotFound");
  CHECK(c["message"] ==
        "Secret team/s3-creds (spec.storage.s3.credentialsSecretRef) does not exist");
  CHECK(h.Pods().empty());

  h.server.Put("secrets", CredentialsSecret({{"AWS_ACCESS_KEY_ID", "QUtJQQ=="}}));
  REQUIRE(h.Reconcile("run").ok());
  c = Condition(h.JobStatus("run"), "CredentialsReady");
  CHECK(c["reason"] == "SecretKeyMissing");
  CHECK_THAT(c["message"].get<std::string>(),
             Catch::StartsWith("Secret team/s3-creds (spec.storage.s3.credentialsSecretRef) has no "
                               "key AWS_SECRET_ACCESS_KEY"));
  CHECK(h.Pods().empty());
  // One Event per problem, not one per look.
  auto reasons = h.EventReasons();
  CHECK(std::count(reasons.begin(), reasons.end(), "SecretNotFound") == 1);
  CHECK(std::count(reasons.begin(), reasons.end(), "SecretKeyMissing") == 1);

  // Fixed: the gang is placed and made, every pod holding the Secret.
  h.server.Put("secrets", CredentialsSecret(kKeys));
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.Reconcile("run").ok());
  c = Condition(h.JobStatus("run"), "CredentialsReady");
  CHECK(c["status"] == "True");
  REQUIRE(h.Pods().size() == 2);
  for (const auto& p : h.Pods()) CHECK_FALSE(SecretVolume(p).empty());
}

TEST_CASE("a running job with S3 storage reads its Secret again within unschedulable_retry",
          "[trainingjob][reconciler][s3]") {
  // Secrets are not watched: however long the resync, a rotation must reach
  // the copies within the retry (10 s); a job without S3 keeps the resync.
  Harness h(std::chrono::hours(1));
  h.server.Put("secrets", CredentialsSecret(kKeys));
  REQUIRE(h.CreateJob(S3Job("s3run", 1)).ok());
  REQUIRE(h.CreateJob(Job("plain", 1)).ok());
  for (const char* name : {"s3run", "plain"}) {
    h.ReconcileUntil(name, "Scheduled");
    REQUIRE(h.Reconcile(name).ok());
  }
  for (auto& p : h.Pods()) h.SetRunning(p, h.server);
  h.ReconcileUntil("s3run", "Running");
  h.ReconcileUntil("plain", "Running");
  auto s3 = h.Reconcile("s3run");
  REQUIRE(s3.ok());
  CHECK(s3->requeue_after == seconds(10));
  auto plain = h.Reconcile("plain");
  REQUIRE(plain.ok());
  CHECK(plain->requeue_after == std::chrono::hours(1));
}

TEST_CASE("a member other than the hub gets a copy of the Secret, in step with the hub's",
          "[trainingjob][reconciler][s3]") {
  Harness h;
  h.AddSecondMember(/*priority=*/10);
  h.server.Put("secrets", CredentialsSecret(kKeys));
  REQUIRE(h.CreateJob(S3Job("run", 2)).ok());
  h.ReconcileUntil("run", "Scheduled");
  REQUIRE(h.JobStatus("run")["placement"][0]["cluster"] == "m2");
  REQUIRE(h.Reconcile("run").ok());  // The copy, then the gang, in m2.
  auto copy = h.server2.Object("secrets", kNs, "run-s3-credentials");
  REQUIRE(copy);
  CHECK((*copy)["data"] == kKeys);
  CHECK((*copy)["metadata"]["labels"][kJobUidLabel] == "uid-trainingjobs-run");
  CHECK((*copy)["metadata"]["labels"][api::kManagedByLabel] == api::kManagedByValue);
  CHECK(h.server2.Objects("secrets", kNs).size() == 1);  // The original stays in the hub.
  auto pods = h.server2.Objects("pods", kNs);
  REQUIRE(pods.size() == 2);
  for (const auto& p : pods) CHECK(SecretVolume(p) == "run-s3-credentials");
  for (auto& p : pods) h.SetRunning(p, h.server2);
  h.ReconcileUntil("run", "Running");
  const std::string version =
      (*h.server2.Object("secrets", kNs, "run-s3-credentials"))["metadata"]["resourceVersion"];
  REQUIRE(h.Reconcile("run").ok());  // Current: not written again.
  CHECK((*h.server2.Object("secrets", kNs, "run-s3-credentials"))["metadata"]["resourceVersion"] ==
        version);

  // The hub's Secret is rotated: the running gang's copy follows.
  json rotated = kKeys;
  rotated["AWS_SECRET_ACCESS_KEY"] = "cm90YXRlZA==";
  rotated["AWS_SESSION_TOKEN"] = "dG9rZW4=";
  h.server.Put("secrets", CredentialsSecret(rotated));
  REQUIRE(h.Reconcile("run").ok());
  CHECK((*h.server2.Object("secrets", kNs, "run-s3-credentials"))["data"] == rotated);
  CHECK(h.JobStatus("run")["phase"] == "Running");

  // The hub's Secret goes: the running gang is left alone, the copy kept.
  h.server.Remove("secrets", kNs, "s3-creds");
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.JobStatus("run")["phase"] == "Running");
  CHECK(Condition(h.JobStatus("run"), "CredentialsReady")["reason"] == "SecretNotFound");
  CHECK(h.server2.Object("secrets", kNs, "run-s3-credentials"));

  // Deleted: the copy goes with the pods, by the finalizer.
  json job = *h.server.Object("trainingjobs", kNs, "run");
  job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
  h.server.Put("trainingjobs", job);
  REQUIRE(h.Reconcile("run").ok());
  REQUIRE(h.Reconcile("run").ok());
  CHECK(h.server2.Objects("pods", kNs).empty());
  CHECK(h.server2.Objects("secrets", kNs).empty());
  CHECK((*h.server.Object("trainingjobs", kNs, "run"))["metadata"]
            .value("finalizers", json::array())
            .empty());
}

TEST_CASE("a local member (the hub itself) uses the job's own Secret, with no copy",
          "[trainingjob][reconciler][s3]") {
  Harness h;
  h.server.Put("memberclusters", {{"apiVersion", "kiln.dev/v1alpha1"},
                                  {"kind", "MemberCluster"},
                                  {"metadata", {{"name", kMember}}},
                                  {"spec", {{"local", true}}}});
  h.server.Put("secrets", CredentialsSecret(kKeys));
  h.StartRunning(S3Job("run", 2));
  REQUIRE(h.Pods().size() == 2);
  for (const auto& p : h.Pods()) CHECK(SecretVolume(p) == "s3-creds");
  const auto secrets = h.server.Objects("secrets", kNs);
  REQUIRE(secrets.size() == 1);
  CHECK(secrets[0]["metadata"]["name"] == "s3-creds");
}

TEST_CASE("a Secret in a member with the copy's name that is not kiln's is left alone",
          "[trainingjob][reconciler][s3]") {
  Harness h;
  h.AddSecondMember(/*priority=*/10);
  h.server.Put("secrets", CredentialsSecret(kKeys));
  json theirs = CredentialsSecret({{"AWS_ACCESS_KEY_ID", "b3RoZXI="}});
  theirs["metadata"]["name"] = "run-s3-credentials";
  h.server2.Put("secrets", theirs);
  REQUIRE(h.CreateJob(S3Job("run", 2)).ok());
  h.ReconcileUntil("run", "Scheduled");
  auto r = h.Reconcile("run");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(),
             Catch::Contains("member cluster m2: Secret team/run-s3-credentials exists and is not "
                             "kiln's copy"));
  CHECK(h.server2.Objects("pods", kNs).empty());
  CHECK((*h.server2.Object("secrets", kNs, "run-s3-credentials"))["data"] == theirs["data"]);
}

TEST_CASE("a worker pod names its job, other pods name none", "[trainingjob][reconciler]") {
  Harness h;
  h.StartRunning(Job("run", 2));
  for (const auto& pod : h.Pods()) {
    auto job = JobOfWorker(pod);
    REQUIRE(job);
    CHECK(job->Key() == "team/run");
  }
  CHECK_FALSE(JobOfWorker({{"metadata", {{"name", "web"}, {"namespace", "team"}}}}));
  CHECK_FALSE(JobOfWorker(
      {{"metadata", {{"name", "p"}, {"labels", {{kJobNameLabel, "run"}}}}}}));  // No namespace.
}

TEST_CASE("the metrics count jobs by phase and drop a deleted job's series",
          "[trainingjob][metrics]") {
  prometheus::Registry registry;
  TrainingJobMetrics m(registry);
  auto text = [&] { return prometheus::TextSerializer().Serialize(registry.Collect()); };
  m.SetPhase("a", "one", "Running");
  m.SetPhase("a", "two", "Running");
  m.SetPhase("a", "two", "Running");  // Again: no change.
  m.SetPhase("b", "one", "Pending");
  m.SetProgress("a", "one", 120, 6000.0, 2.5);
  m.SetProgress("b", "one", 7, std::nullopt, std::nullopt);  // Not reported yet: no series.
  CHECK_THAT(text(), Catch::Contains("kiln_trainingjob_jobs{phase=\"Running\"} 2\n"));
  CHECK_THAT(text(), Catch::Contains("kiln_trainingjob_jobs{phase=\"Pending\"} 1\n"));
  CHECK_THAT(text(),
             Catch::Contains("kiln_trainingjob_step{namespace=\"a\",trainingjob=\"one\"} 120\n"));
  CHECK_THAT(text(),
             Catch::Contains("kiln_trainingjob_loss{namespace=\"a\",trainingjob=\"one\"} 2.5\n"));
  CHECK_THAT(text(), !Catch::Contains("kiln_trainingjob_loss{namespace=\"b\""));
  m.SetPhase("a", "one", "Succeeded");  // Finished: no progress to report.
  CHECK_THAT(text(), !Catch::Contains("kiln_trainingjob_step{namespace=\"a\""));
  CHECK_THAT(text(), Catch::Contains("kiln_trainingjob_step{namespace=\"b\""));
  m.SetPhase("a", "one", "");
  CHECK_THAT(text(), Catch::Contains("kiln_trainingjob_jobs{phase=\"Running\"} 1\n"));
  CHECK_THAT(text(), Catch::Contains("kiln_trainingjob_jobs{phase=\"Succeeded\"} 0\n"));
  CHECK_THAT(text(), !Catch::Contains("kiln_trainingjob_step{namespace=\"a\""));
  CHECK_THAT(text(), !Catch::Contains("kiln_trainingjob_tokens_per_second{"));
  CHECK_THAT(text(), !Catch::Contains("kiln_trainingjob_loss{"));
}

}  // namespace
}  // namespace kiln::trainingjob
