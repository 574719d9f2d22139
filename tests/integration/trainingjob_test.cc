// The TrainingJob controller against the shared local control plane (kwok
// nodes with 8 fake GPUs each): the second cluster (the first is the Helm
// test's, which must find no kiln CRDs there) is the hub and, through a
// MemberCluster, its own member. A job is placed, its gated pods are created
// and bound by the member's scheduler to the placed nodes, and it runs; a
// worker that disappears restarts the whole gang as a new attempt, recorded
// in the restart history; a GPU fault with nodeQuarantine at one fault taints
// the node (listed in the job's and the MemberCluster's status), the gang
// restarts elsewhere, and the taint comes off once its end has passed; a job
// larger than the fleet stays unscheduled with
// the placement engine's reason; deleting a job removes its pods (finalizer).
// The fault table: each way a worker ends → its reason and action. An
// elastic job starts small, grows when capacity frees and follows the scale
// subresource.
// Prints the measured times. (Training itself on real nodes is the real-node
// suites' part.)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/base64.h"
#include "base/file.h"
#include "base/log.h"
#include "kube/api_error.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/trainingjob/reconciler.h"
#include "operator/fleet/fleet.h"
#include "tests/support/background_process.h"
#include "tests/support/local_clusters.h"
#include "tests/support/temp_dir.h"

namespace kiln::trainingjob {
namespace {

using kube::json;
using Clock = std::chrono::steady_clock;

// Records every log line, at debug level, instead of printing it while it
// lives, for tests that check what kiln says.
class LogRecorder final : public log::Sink {
 public:
  LogRecorder() : level_(log::GetLevel()) {
    log::SetLevel(log::Level::kDebug);
    log::SetSink(this);
    log::Logger("test").Debug("the log recorder is on");
  }
  ~LogRecorder() override {
    log::SetSink(nullptr);
    log::SetLevel(level_);
  }
  LogRecorder(const LogRecorder&) = delete;
  LogRecorder& operator=(const LogRecorder&) = delete;
  void Write(std::string_view line) override {
    std::lock_guard<std::mutex> lock(mu_);
    text_.append(line);  // A line ends with its newline.
  }
  std::string Text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }

 private:
  const log::Level level_;
  std::mutex mu_;
  std::string text_;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Polls `probe` (bounded) until it returns true; the time it took.
template <typename F>
Clock::duration WaitUntil(const std::string& what, F probe,
                          std::chrono::seconds limit = std::chrono::seconds(90)) {
  const auto start = Clock::now();
  while (Clock::now() - start < limit) {
    if (probe()) return Clock::now() - start;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("timed out waiting for " << what);
  return limit;
}

// The shared cluster's nodes without a quarantine an earlier, failed run of
// these tests left behind (a passing run lifts its own): a leftover taint
// would starve this run's gangs and fail it for the wrong reason.
void LiftLeftoverQuarantines(kube::Client& client) {
  auto nodes = client.List(kube::resources::kNodes, "");
  REQUIRE(nodes.ok());
  for (json node : (*nodes)["items"]) {
    json& taints = node["spec"]["taints"];
    if (!taints.is_array()) continue;
    json kept = json::array();
    for (const auto& t : taints) {
      if (t.value("key", "") != "kiln.dev/quarantined") kept.push_back(t);
    }
    if (kept.size() == taints.size()) continue;
    taints = kept;
    REQUIRE(client.Update(kube::resources::kNodes, node).ok());
  }
}

json Job(const std::string& ns, const std::string& name, int replicas, int gpus) {
  return {{"apiVersion", "kiln.dev/v1alpha1"},
          {"kind", "TrainingJob"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec",
           {{"model",
             {{"architecture", "gpt"},
              {"layers", 2},
              {"hiddenSize", 64},
              {"heads", 4},
              {"vocabSize", 257},
              {"contextLength", 64}}},
            {"data", {{"uri", "file:///usr/share/games/fortunes"}}},
            {"training",
             {{"steps", 100},
              {"globalBatchSize", 8 * replicas},
              {"microBatchSize", 8},
              {"sequenceLength", 64}}},
            {"workers",
             {{"replicas", replicas},
              {"gpusPerWorker", gpus},
              {"image", "ghcr.io/kiln-dev/kiln-worker:0.1.0"}}},
            {"checkpoint", {{"uri", "file:///kiln/" + name}}},
            {"failurePolicy", {{"maxRestarts", 3}, {"backoff", {{"initial", "1s"}}}}}}}};
}

// A worker pod's status as its kubelet writes it once the worker container
// exited `code` (`reason`: Error, OOMKilled, ...) with the termination
// message `message`.
json ExitedWorkerStatus(int code, const std::string& reason, const std::string& message = "") {
  return {{"phase", "Failed"},
          {"containerStatuses",
           json::array({{{"name", kWorkerContainer},
                         {"ready", false},
                         {"restartCount", 0},
                         {"image", "ghcr.io/kiln-dev/kiln-worker:0.1.0"},
                         {"imageID", ""},
                         {"state",
                          {{"terminated",
                            {{"exitCode", code}, {"reason", reason}, {"message", message}}}}}}})}};
}

// Counts the reconciles a controller completes (the scale bench's rate).
class CountedReconciler final : public runtime::Reconciler {
 public:
  explicit CountedReconciler(runtime::Reconciler& inner) : inner_(inner) {}
  StatusOr<runtime::Result> Reconcile(const runtime::Context& ctx,
                                      const runtime::Request& request) override {
    auto result = inner_.Reconcile(ctx, request);
    count_.fetch_add(1);
    return result;
  }
  int64_t count() const { return count_.load(); }

 private:
  runtime::Reconciler& inner_;
  std::atomic<int64_t> count_{0};
};

// The hub (the local control plane's second cluster) with kiln's CRDs, a
// namespace of its own, the hub as its own member through a MemberCluster
// (heartbeat 1 s), and the fleet and TrainingJob controllers running in this
// process. The resync is an hour: only the jobs' own events and their
// workers' (the member's pod informer through Fleet::OnMemberPod) wake their
// reconciles, so a broken pod watch fails these tests instead of hiding
// behind polling.
class Hub {
 public:
  // `create_parallelism`: the reconciler's option of that name (the
  // benchmark compares values).
  explicit Hub(int create_parallelism = TrainingJobReconcilerOptions{}.create_parallelism) {
    auto lc = testing::LocalClusters::FromEnvironment();
    REQUIRE(lc.ok());
    REQUIRE(lc->clusters().size() >= 2);
    const testing::LocalCluster& hub_cluster = lc->clusters()[1];
    auto client = lc->Client(hub_cluster);
    REQUIRE(client.ok());
    client_ = std::move(*client);
    kube::Client& hub = *client_;
    LiftLeftoverQuarantines(hub);
    for (const char* crd : {"memberclusters", "trainingjobs"}) {
      const Status applied = lc->ApplyCrd(
          hub_cluster, std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_" + crd + ".yaml",
          std::string(crd) + ".kiln.dev");
      INFO(applied.ToString());
      REQUIRE(applied.ok());
    }
    ns_ = testing::UniqueName("kiln-tj");
    REQUIRE(hub.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", ns_}}}}).ok());
    auto kubeconfig = ReadFile(hub_cluster.kubeconfig);
    REQUIRE(kubeconfig.ok());
    REQUIRE(hub.Create(kube::resources::kSecrets, ns_,
                       {{"metadata", {{"name", "hub"}, {"namespace", ns_}}},
                        {"data", {{"kubeconfig", Base64Encode(*kubeconfig)}}}})
                .ok());
    member_ = testing::UniqueName("tj-member");
    REQUIRE(hub.Create(api::v1alpha1::kMemberClusters, "",
                       {{"apiVersion", "kiln.dev/v1alpha1"},
                        {"kind", "MemberCluster"},
                        {"metadata", {{"name", member_}}},
                        {"spec",
                         {{"kubeconfigSecretRef", {{"name", "hub"}, {"namespace", ns_}}},
                          {"heartbeatInterval", "1s"},
                          {"unreachableAfter", "5s"}}}})
                .ok());
    manager_ = std::make_unique<runtime::Manager>(
        hub,
        runtime::ManagerOptions{.metrics_bind_address = "0", .health_probe_bind_address = "0"});
    auto fleet = fleet::Fleet::Register(*manager_, hub, {.secret_namespace = ns_});
    REQUIRE(fleet.ok());
    fleet_ = std::move(*fleet);
    auto jobs = manager_->GetInformer(hub, api::v1alpha1::kTrainingJobs, {.ns = ns_});
    REQUIRE(jobs.ok());
    reconciler_ = std::make_unique<TrainingJobReconciler>(
        hub, fleet_->members(), fleet_->capacity(), &manager_->events(),
        TrainingJobReconcilerOptions{
            .volume = {.claim_name = "", .host_path = "/tmp", .mount_path = "/kiln"},
            .resync = std::chrono::hours(1),
            .grow_interval = std::chrono::seconds(1),
            .create_parallelism = create_parallelism});
    counted_ = std::make_unique<CountedReconciler>(*reconciler_);
    runtime::Controller& controller =
        manager_->AddController("trainingjob", *counted_, {.workers = 2});
    controller_ = &controller;
    controller.For(**jobs);
    fleet_->OnMemberPod([&controller](const std::string&, const json& pod) {
      if (auto job = JobOfWorker(pod)) controller.queue().Add(job->Key());
    });
    run_ = std::async(std::launch::async, [this] { return manager_->Run(stop_); });
    // The member's MemberCluster must be Ready (and its capacity known) first.
    WaitUntil("the member Ready", [&] { return fleet_->members().Get(member_) != nullptr; });
    WaitUntil("the member's capacity", [&] {
      auto c = fleet_->capacity().Snapshot().cluster(member_);
      return c != nullptr && c->free_gpus() > 0;
    });
  }
  // A failed REQUIRE unwinds through here: the manager is stopped before its
  // future's destructor waits for Run (else the test hangs until CTest's
  // timeout), after the controllers have deleted the test's jobs (bounded),
  // and the MemberCluster and the namespace go, so a failed test leaves
  // neither GPUs held nor a member no one connects to for the next.
  ~Hub() {
    if (finished_) return;
    try {
      if (auto jobs = client_->List(api::v1alpha1::kTrainingJobs, ns_); jobs.ok()) {
        for (const auto& j : (*jobs)["items"]) {
          (void)client_->Delete(api::v1alpha1::kTrainingJobs, ns_, j["metadata"].value("name", ""));
        }
      }
      const auto until = Clock::now() + std::chrono::seconds(30);
      while (Clock::now() < until) {
        auto left = client_->List(api::v1alpha1::kTrainingJobs, ns_);
        if (!left.ok() || (*left)["items"].empty()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    } catch (...) {
    }
    stop_ = true;
    if (run_.valid()) run_.wait();
    try {
      (void)client_->Delete(api::v1alpha1::kMemberClusters, "", member_);
      (void)client_->Delete(kube::resources::kNamespaces, "", ns_);
    } catch (...) {
    }
  }

  // Stops the controllers and deletes the MemberCluster and the namespace.
  void Finish() {
    finished_ = true;
    stop_ = true;
    CHECK(run_.get().ok());
    CHECK(client_->Delete(api::v1alpha1::kMemberClusters, "", member_).ok());
    CHECK(client_->Delete(kube::resources::kNamespaces, "", ns_).ok());
  }

  kube::Client& client() { return *client_; }
  const std::string& ns() const { return ns_; }
  const std::string& member() const { return member_; }
  fleet::CapacityView& capacity() { return fleet_->capacity(); }
  // Reconciles the TrainingJob controller has completed so far.
  int64_t reconciles() const { return counted_->count(); }
  // Queues job `name` for a reconcile, as an event would.
  void Enqueue(const std::string& name) { controller_->queue().Add(ns_ + "/" + name); }
  json JobStatus(const std::string& name) {
    auto j = client_->Get(api::v1alpha1::kTrainingJobs, ns_, name);
    return j.ok() ? j->value("status", json::object()) : json::object();
  }
  // Writes `status` into pod `pod`'s status, as its kubelet would.
  Status SetPodStatus(const std::string& pod, const json& status) {
    return client_
        ->Patch(kube::resources::kPods, ns_, pod, kube::PatchType::kMerge,
                json{{"status", status}}.dump(), {.subresource = "status"})
        .status();
  }
  json PodsOf(const std::string& name) {
    auto list = client_->List(kube::resources::kPods, ns_,
                              {.label_selector = std::string(kJobNameLabel) + "=" + name});
    return list.ok() ? (*list)["items"] : json::array();
  }

 private:
  std::unique_ptr<kube::Client> client_;
  std::string ns_;
  std::string member_;
  std::unique_ptr<runtime::Manager> manager_;
  std::unique_ptr<fleet::Fleet> fleet_;
  std::unique_ptr<TrainingJobReconciler> reconciler_;
  std::unique_ptr<CountedReconciler> counted_;
  runtime::Controller* controller_ = nullptr;
  std::atomic<bool> stop_{false};
  std::future<Status> run_;
  bool finished_ = false;
};

TEST_CASE("a TrainingJob is placed, runs, restarts as a whole and is cleaned up",
          "[integration][trainingjob]") {
  Hub h;
  kube::Client& hub = h.client();
  const std::string& ns = h.ns();
  const std::string& member = h.member();
  auto job_status = [&](const std::string& name) { return h.JobStatus(name); };
  auto pods_of = [&](const std::string& name) { return h.PodsOf(name); };

  const std::string name = "gang";
  const auto submitted = Clock::now();
  REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, ns, Job(ns, name, 2, 8)).ok());
  WaitUntil("status.placement", [&] { return job_status(name).contains("placement"); });
  const json placed = job_status(name);
  INFO(placed.dump());
  REQUIRE(placed["placement"].size() == 1);
  CHECK(placed["placement"][0]["cluster"] == member);
  const json nodes = placed["placement"][0]["nodes"];
  REQUIRE(nodes.size() == 2);
  // Pods bound by the member's scheduler to the placed nodes, then running.
  auto running = WaitUntil("both workers running", [&] {
    const json pods = pods_of(name);
    int n = 0;
    for (const auto& p : pods) {
      n += p["status"].value("phase", "") == "Running" ? 1 : 0;
    }
    return n == 2 && job_status(name).value("phase", "") == "Running";
  });
  std::printf("trainingjob: submit → 2 workers Running (phase Running) in %.2f s\n",
              Seconds(Clock::now() - submitted));
  (void)running;
  for (const auto& p : pods_of(name)) {
    const int rank = std::stoi(p["metadata"]["labels"][kRankLabel].get<std::string>());
    CHECK(p["spec"]["nodeName"] == nodes[static_cast<size_t>(rank)]);
    CHECK_FALSE(p["spec"].contains("schedulingGates"));
    CHECK(p["metadata"]["name"] == "gang-0-" + std::to_string(rank));
  }
  CHECK(job_status(name).value("readyWorkers", 0) == 2);

  // A worker disappears: the whole gang restarts as attempt 1.
  const auto fault = Clock::now();
  REQUIRE(hub.Delete(kube::resources::kPods, ns, "gang-0-1", {.grace_period_seconds = 0}).ok());
  WaitUntil("the restart recorded", [&] { return job_status(name).value("restarts", 0) == 1; });
  const json restarted = job_status(name);
  INFO(restarted.dump());
  REQUIRE(restarted["restartHistory"].size() == 1);
  CHECK(restarted["restartHistory"][0]["reason"] == "WorkerError");
  CHECK_THAT(restarted["restartHistory"][0]["message"].get<std::string>(),
             Catch::Contains("deleted before it exited"));
  WaitUntil("attempt 1 running", [&] {
    int n = 0;
    for (const auto& p : pods_of(name)) {
      n += p["metadata"]["labels"][kAttemptLabel] == "1" &&
                   p["status"].value("phase", "") == "Running"
               ? 1
               : 0;
    }
    return n == 2 && job_status(name).value("phase", "") == "Running";
  });
  std::printf(
      "trainingjob: worker deleted → whole gang running again as attempt 1 in %.2f s "
      "(backoff 1 s, woken by the pod watch)\n",
      Seconds(Clock::now() - fault));
  for (const auto& p : pods_of(name)) CHECK(p["metadata"]["labels"][kAttemptLabel] == "1");

  // A GPU fault (exit 3 naming the GPU, written into rank 0's status as its
  // kubelet would) with nodeQuarantine at one fault: the node is tainted in
  // the member until the window's end, listed in the job's and the
  // MemberCluster's status, and the gang restarts on other nodes.
  REQUIRE(hub.Patch(api::v1alpha1::kTrainingJobs, ns, name, kube::PatchType::kMerge,
                    R"({"spec":{"failurePolicy":{"nodeQuarantine":{"faults":1,"window":"1h"}}}})")
              .ok());
  auto rank0 = hub.Get(kube::resources::kPods, ns, "gang-1-0");
  REQUIRE(rank0.ok());
  const std::string bad_node = (*rank0)["spec"].value("nodeName", "");
  REQUIRE_FALSE(bad_node.empty());
  const auto gpu_fault = Clock::now();
  const Status failed = h.SetPodStatus(
      "gang-1-0",
      ExitedWorkerStatus(3, "Error",
                         R"({"exitCode":3,"message":"Xid 79: GPU has fallen off the bus"})"));
  REQUIRE(failed.ok());
  WaitUntil("the node quarantined", [&] {
    return job_status(name).value("quarantinedNodes", json::array()) ==
           json::array({member + "/" + bad_node});
  });
  const json quarantined = job_status(name);
  INFO(quarantined.dump());
  CHECK(quarantined["restarts"] == 2);
  CHECK(quarantined["restartHistory"][1]["reason"] == "GPUFault");
  CHECK(quarantined["restartHistory"][1]["node"] == bad_node);
  auto tainted = hub.Get(kube::resources::kNodes, "", bad_node);
  REQUIRE(tainted.ok());
  json quarantine_taint;
  for (const auto& t : (*tainted)["spec"].value("taints", json::array())) {
    if (t.value("key", "") == "kiln.dev/quarantined") quarantine_taint = t;
  }
  INFO((*tainted)["spec"].dump());
  REQUIRE(quarantine_taint.is_object());
  CHECK(quarantine_taint["effect"] == "NoSchedule");
  const long long ends = std::stoll(quarantine_taint["value"].get<std::string>());
  const long long unix_now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
  CHECK(ends > unix_now + 3500);
  CHECK(ends <= unix_now + 3600);
  WaitUntil("the MemberCluster counting it", [&] {
    auto mc = hub.Get(api::v1alpha1::kMemberClusters, "", member);
    return mc.ok() && (*mc)["status"].value("quarantinedNodes", 0) == 1;
  });
  WaitUntil("attempt 2 running elsewhere", [&] {
    int n = 0;
    for (const auto& p : pods_of(name)) {
      n += p["metadata"]["labels"][kAttemptLabel] == "2" &&
                   p["status"].value("phase", "") == "Running"
               ? 1
               : 0;
    }
    return n == 2 && job_status(name).value("phase", "") == "Running";
  });
  std::printf(
      "trainingjob: GPU fault → node quarantined and the gang running again elsewhere as "
      "attempt 2 in %.2f s (backoff 2 s, woken by the pod watch)\n",
      Seconds(Clock::now() - gpu_fault));
  for (const auto& p : pods_of(name)) {
    if (p["metadata"]["labels"][kAttemptLabel] == "2") CHECK(p["spec"]["nodeName"] != bad_node);
  }

  // The window passes (its end moved into the past): the MemberCluster
  // controller lifts the taint on its next heartbeat.
  json ended = (*tainted)["spec"]["taints"];
  for (auto& t : ended) {
    if (t.value("key", "") == "kiln.dev/quarantined") t["value"] = std::to_string(unix_now - 1);
  }
  REQUIRE(hub.Patch(kube::resources::kNodes, "", bad_node, kube::PatchType::kMerge,
                    json{{"spec", {{"taints", ended}}}}.dump())
              .ok());
  const auto window_end = Clock::now();
  WaitUntil("the quarantine lifted", [&] {
    auto n = hub.Get(kube::resources::kNodes, "", bad_node);
    if (!n.ok()) return false;
    for (const auto& t : (*n)["spec"].value("taints", json::array())) {
      if (t.value("key", "") == "kiln.dev/quarantined") return false;
    }
    return true;
  });
  std::printf("trainingjob: ended quarantine lifted in %.2f s (heartbeat 1 s)\n",
              Seconds(Clock::now() - window_end));
  WaitUntil("the MemberCluster counting none", [&] {
    auto mc = hub.Get(api::v1alpha1::kMemberClusters, "", member);
    return mc.ok() && (*mc)["status"].value("quarantinedNodes", 1) == 0;
  });

  // Checkpoints in S3 (spec.storage.s3): with its credentials Secret missing
  // the job makes no pod and says why; once the Secret exists the member
  // (this MemberCluster is not spec.local, so it counts as another cluster)
  // gets kiln's copy of it, which the workers mount; a rotation reaches the
  // copy; deleting the job removes the copy with the pods. The keys never
  // appear in a log line (at debug level) or an Event.
  {
    LogRecorder logs;
    const std::string s3job = "s3job";
    json spec = Job(ns, s3job, 1, 1);
    spec["spec"]["checkpoint"]["uri"] = "s3://checkpoints/" + s3job;
    spec["spec"]["storage"] = {{"s3",
                                {{"endpoint", "http://127.0.0.1:8333"},
                                 {"addressingStyle", "Path"},
                                 {"credentialsSecretRef", {{"name", "s3-creds"}}}}}};
    REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, ns, spec).ok());
    auto credentials = [&]() -> json {
      for (const auto& c : job_status(s3job).value("conditions", json::array())) {
        if (c["type"] == "CredentialsReady") return c;
      }
      return nullptr;
    };
    WaitUntil("CredentialsReady=False", [&] {
      json c = credentials();
      return c.is_object() && c["status"] == "False";
    });
    CHECK(credentials()["reason"] == "SecretNotFound");
    CHECK(credentials()["message"] == "Secret " + ns +
                                          "/s3-creds (spec.storage.s3.credentialsSecretRef) "
                                          "does not exist");
    CHECK(pods_of(s3job).empty());
    const std::string first_key = "kiln-secret-first-8f3a2c", rotated_key = "kiln-rotated-5d1e9b";
    json keys = {{"AWS_ACCESS_KEY_ID", Base64Encode("kiln")},
                 {"AWS_SECRET_ACCESS_KEY", Base64Encode(first_key)}};
    json secret = {{"metadata", {{"name", "s3-creds"}, {"namespace", ns}}}, {"data", keys}};
    REQUIRE(hub.Create(kube::resources::kSecrets, ns, secret).ok());
    const std::string copy_name = s3job + "-s3-credentials";
    // Secrets are not watched: the job looks again every 10 s.
    WaitUntil("the worker running with the copy", [&] {
      const json pods = pods_of(s3job);
      return pods.size() == 1 && pods[0]["status"].value("phase", "") == "Running";
    });
    CHECK(credentials()["status"] == "True");
    auto copy = hub.Get(kube::resources::kSecrets, ns, copy_name);
    REQUIRE(copy.ok());
    CHECK((*copy)["data"] == keys);
    CHECK((*copy)["metadata"]["labels"][api::kManagedByLabel] == api::kManagedByValue);
    const json pod = pods_of(s3job)[0];
    bool mounted = false;
    for (const auto& v : pod["spec"]["volumes"]) {
      if (v["name"] == "s3-credentials") mounted = v["secret"]["secretName"] == copy_name;
    }
    CHECK(mounted);
    std::string env_dump = pod["spec"]["containers"][0].value("env", json::array()).dump();
    CHECK_THAT(env_dump, Catch::Contains("KILN_S3_CREDENTIALS_DIR"));
    CHECK_THAT(env_dump, Catch::Contains("http://127.0.0.1:8333"));
    CHECK_THAT(env_dump, !Catch::Contains(Base64Encode(first_key)));

    keys["AWS_SECRET_ACCESS_KEY"] = Base64Encode(rotated_key);
    REQUIRE(hub.Patch(kube::resources::kSecrets, ns, "s3-creds", kube::PatchType::kMerge,
                      json{{"data", keys}}.dump())
                .ok());
    WaitUntil("the copy rotated", [&] {
      auto c = hub.Get(kube::resources::kSecrets, ns, copy_name);
      return c.ok() && (*c)["data"] == keys;
    });
    REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, ns, s3job).ok());
    WaitUntil("the s3 job, its pod and the copy gone", [&] {
      return pods_of(s3job).empty() &&
             kube::IsNotFound(hub.Get(kube::resources::kSecrets, ns, copy_name).status()) &&
             kube::IsNotFound(hub.Get(api::v1alpha1::kTrainingJobs, ns, s3job).status());
    });
    CHECK(hub.Get(kube::resources::kSecrets, ns, "s3-creds").ok());  // The user's stays.

    // Neither key, plain or in base64, in what kiln said meanwhile (at any
    // level: the recorder takes debug lines, as its own shows).
    const std::string said = logs.Text();
    CHECK_THAT(said, Catch::Contains("the log recorder is on"));
    auto events = hub.List(kube::resources::kEvents, ns);
    REQUIRE(events.ok());
    const std::string event_text = (*events)["items"].dump();
    CHECK_FALSE(event_text.empty());
    for (const std::string& key : {first_key, rotated_key}) {
      for (const std::string& form : {key, Base64Encode(key)}) {
        INFO(form);
        CHECK(said.find(form) == std::string::npos);
        CHECK(event_text.find(form) == std::string::npos);
      }
    }
  }

  // More GPUs than the fleet has: unscheduled, with the engine's reason.
  REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, ns, Job(ns, "huge", 64, 8)).ok());
  WaitUntil("Scheduled=False", [&] {
    for (const auto& c : job_status("huge").value("conditions", json::array())) {
      if (c["type"] == "Scheduled" && c["status"] == "False") return true;
    }
    return false;
  });
  const json huge = job_status("huge");  // Kept: a range-for over a temporary's part dangles.
  for (const auto& c : huge["conditions"]) {
    if (c["type"] != "Scheduled") continue;
    CHECK(c["reason"] == "InsufficientCapacity");
    CHECK_THAT(c["message"].get<std::string>(), Catch::Contains("largest free"));
  }
  CHECK(pods_of("huge").empty());

  // Deleting the job removes its pods, then the job (finalizer).
  REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, ns, name).ok());
  WaitUntil("the job and its pods gone", [&] {
    return pods_of(name).empty() &&
           kube::IsNotFound(hub.Get(api::v1alpha1::kTrainingJobs, ns, name).status());
  });
  REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, ns, "huge").ok());
  WaitUntil("huge gone", [&] {
    return kube::IsNotFound(hub.Get(api::v1alpha1::kTrainingJobs, ns, "huge").status());
  });

  h.Finish();
}

// The worker pods of `pods` in attempt 0 that run with `world` ranks and
// `accumulation` micro-batches each, Running.
int RunningSizedAs(const json& pods, int world, int accumulation) {
  int n = 0;
  for (const auto& p : pods) {
    const std::string text = p.dump();
    n += p["metadata"]["labels"][kAttemptLabel] == "0" &&
                 p["status"].value("phase", "") == "Running" &&
                 text.find(R"({"name":"WORLD_SIZE","value":")" + std::to_string(world) + "\"}") !=
                     std::string::npos &&
                 text.find("--grad-accum=" + std::to_string(accumulation) + "\"") !=
                     std::string::npos
             ? 1
             : 0;
  }
  return n;
}

TEST_CASE("an elastic job starts small, grows when capacity frees and follows kubectl scale",
          "[integration][trainingjob]") {
  Hub h;
  kube::Client& hub = h.client();
  const std::string& ns = h.ns();
  auto condition = [&](const std::string& job, const std::string& type) {
    for (const auto& c : h.JobStatus(job).value("conditions", json::array())) {
      if (c["type"] == type) return c;
    }
    return json::object();
  };
  // The member has 4 nodes of 8 GPUs; a blocker takes one, after whatever
  // else is there.
  auto free_nodes = [&] {
    auto c = h.capacity().Snapshot().cluster(h.member());
    return c == nullptr ? 0 : static_cast<int>(c->free_gpus() / 8);
  };
  WaitUntil("4 free nodes", [&] { return free_nodes() == 4; });
  REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, ns, Job(ns, "blocker", 1, 8)).ok());
  WaitUntil("the blocker running",
            [&] { return h.JobStatus("blocker").value("phase", "") == "Running"; });

  // Asks for 4 workers, may run with 1; the global batch is 4 micro-batches,
  // so 3 free nodes run 2 workers accumulating 2 each (3 does not split it).
  json elastic = Job(ns, "elastic", 4, 8);
  elastic["spec"]["elastic"] = {{"minReplicas", 1}, {"maxReplicas", 4}};
  REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, ns, elastic).ok());
  WaitUntil("2 workers running", [&] {
    return RunningSizedAs(h.PodsOf("elastic"), 2, 2) == 2 &&
           h.JobStatus("elastic").value("phase", "") == "Running";
  });
  CHECK(h.JobStatus("elastic")["replicas"] == 2);
  WaitUntil("WaitingForCapacity", [&] {
    return condition("elastic", "Resizing").value("reason", "") == "WaitingForCapacity";
  });
  CHECK_THAT(condition("elastic", "Resizing")["message"].get<std::string>(),
             Catch::Contains("runs 2 of the 4 workers asked for"));

  // The blocker goes: the gang checkpoints and resumes with 4, same attempt.
  const auto freed = Clock::now();
  REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, ns, "blocker").ok());
  WaitUntil("4 workers running", [&] {
    return RunningSizedAs(h.PodsOf("elastic"), 4, 1) == 4 &&
           h.JobStatus("elastic").value("phase", "") == "Running";
  });
  std::printf("trainingjob: capacity freed → elastic gang resized 2 → 4 and Running in %.2f s\n",
              Seconds(Clock::now() - freed));
  json s = h.JobStatus("elastic");
  INFO(s.dump());
  CHECK(s["replicas"] == 4);
  CHECK(s.value("restarts", 0) == 0);
  CHECK(condition("elastic", "Resizing")["reason"] == "Resized");

  // kubectl scale: the scale subresource refuses a size that does not split
  // the global batch, naming the field, and past maxReplicas; 2 shrinks it.
  auto refused = hub.SetScale(api::v1alpha1::kTrainingJobs, ns, "elastic", 3);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.status().message(), Catch::Contains("spec.workers.replicas"));
  CHECK_THAT(refused.status().message(), Catch::Contains("microBatchSize x workers.replicas"));
  CHECK_FALSE(hub.SetScale(api::v1alpha1::kTrainingJobs, ns, "elastic", 8).ok());
  const auto scaled = Clock::now();
  REQUIRE(hub.SetScale(api::v1alpha1::kTrainingJobs, ns, "elastic", 2).ok());
  WaitUntil("2 workers running again", [&] {
    const json pods = h.PodsOf("elastic");
    return pods.size() == 2 && RunningSizedAs(pods, 2, 2) == 2 &&
           h.JobStatus("elastic").value("phase", "") == "Running";
  });
  std::printf("trainingjob: scaled 4 → 2 → Running in %.2f s\n", Seconds(Clock::now() - scaled));
  CHECK(h.JobStatus("elastic").value("restarts", 0) == 0);
  auto scale = hub.GetScale(api::v1alpha1::kTrainingJobs, ns, "elastic");
  REQUIRE(scale.ok());
  CHECK((*scale)["spec"]["replicas"] == 2);
  CHECK((*scale)["status"]["replicas"] == 2);

  REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, ns, "elastic").ok());
  WaitUntil("the elastic job gone", [&] {
    return h.PodsOf("elastic").empty() &&
           kube::IsNotFound(hub.Get(api::v1alpha1::kTrainingJobs, ns, "elastic").status());
  });
  h.Finish();
}

// The fault table on kwok nodes: each way a worker can end, written into its
// pod's status as its kubelet would, classified and acted on as
// docs/trainingjob.md's table says — restart (the reason in restartHistory)
// or fail (the reason on the Failed condition) — by a controller woken only
// by the pod watch. One 1-GPU job per row, all at once. The node rows are
// the next test's (nodes of its own); a lost cluster is the fleet suite's.
TEST_CASE("the fault table: each worker ending gets the reason and action the table gives",
          "[integration][trainingjob]") {
  Hub h;
  kube::Client& hub = h.client();
  struct Row {
    std::string name;
    std::string what;
    json status;  // The pod's status as the kubelet would write it.
    std::string reason;
    bool restarts;
  };
  auto worker_message = [](int code, const std::string& text) {
    return json{{"exitCode", code}, {"message", text}, {"lastStep", 40}}.dump();
  };
  const std::vector<Row> rows = {
      {"exit1", "exit 1", ExitedWorkerStatus(1, "Error", worker_message(1, "internal error")),
       "WorkerError", true},
      {"exit2", "exit 2", ExitedWorkerStatus(2, "Error", worker_message(2, "--lr: not a number")),
       "ConfigurationError", false},
      {"exit3gpu", "exit 3 naming the GPU",
       ExitedWorkerStatus(3, "Error", worker_message(3, "Xid 79: GPU has fallen off the bus")),
       "GPUFault", true},
      {"exit3disk", "exit 3 otherwise",
       ExitedWorkerStatus(3, "Error",
                          worker_message(3, "cannot write /kiln/x: No space left on device")),
       "NodeFailure", true},
      {"exit4", "exit 4", ExitedWorkerStatus(4, "Error", worker_message(4, "collective timed out")),
       "CollectiveTimeout", true},
      {"exit5", "exit 5",
       ExitedWorkerStatus(5, "Error", worker_message(5, "loss is not finite at step 41")),
       "LossDiverged", true},
      {"exit6", "exit 6",
       ExitedWorkerStatus(6, "Error", worker_message(6, "manifest.json: not found")), "DataError",
       false},
      {"exit8", "exit 8 (fence held by another job)",
       ExitedWorkerStatus(8, "Error",
                          worker_message(8,
                                         "superseded: job other-uid attempt 0 holds the "
                                         "checkpoints")),
       "Superseded", false},
      {"sigterm", "exit 143 (a signal)", ExitedWorkerStatus(143, "Error", ""), "WorkerError", true},
      {"oom", "OOMKilled", ExitedWorkerStatus(137, "OOMKilled", ""), "OOMKilled", true},
      {"evicted", "evicted by the kubelet",
       json{{"phase", "Failed"},
            {"reason", "Evicted"},
            {"message", "The node was low on resource: memory."}},
       "Preempted", true},
  };
  for (const Row& row : rows) {
    REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, h.ns(), Job(h.ns(), row.name, 1, 1)).ok());
  }
  for (const Row& row : rows) {
    WaitUntil(row.name + " running", [&] {
      const json pods = h.PodsOf(row.name);
      return pods.size() == 1 && pods[0]["status"].value("phase", "") == "Running" &&
             h.JobStatus(row.name).value("phase", "") == "Running";
    });
  }
  std::map<std::string, Clock::time_point> injected;
  for (const Row& row : rows) {
    const std::string pod = row.name + "-0-0";
    injected[row.name] = Clock::now();
    const Status patched = h.SetPodStatus(pod, row.status);
    INFO(row.name << ": " << patched.ToString());
    REQUIRE(patched.ok());
  }
  std::printf(
      "trainingjob fault table (a pod's status written → the action in the job's status):\n");
  for (const Row& row : rows) {
    INFO(row.what);
    json status;
    const auto took = WaitUntil(row.name + " acted on", [&] {
      status = h.JobStatus(row.name);
      return status.value("restarts", 0) == 1 || status.value("phase", "") == "Failed";
    });
    (void)took;
    const double seconds = Seconds(Clock::now() - injected[row.name]);
    INFO(status.dump());
    if (row.restarts) {
      CHECK(status.value("phase", "") != "Failed");
      REQUIRE(status.contains("restartHistory"));
      CHECK(status["restartHistory"][0]["reason"] == row.reason);
      if (row.reason == "LossDiverged") {
        // No checkpoint was ever reported: the rewind is bounded by the step
        // the worker said it failed at.
        CHECK(status["restartHistory"][0]["rewindBeforeStep"] == 40);
      }
    } else {
      CHECK(status.value("phase", "") == "Failed");
      CHECK(status.value("restarts", 0) == 0);
      bool found = false;
      for (const auto& c : status.value("conditions", json::array())) {
        if (c["type"] == "Failed" && c["status"] == "True") found = c["reason"] == row.reason;
      }
      CHECK(found);
    }
    std::printf("  %-22s -> %-18s %-7s in %.2f s\n", row.what.c_str(), row.reason.c_str(),
                row.restarts ? "restart" : "fail", seconds);
  }
  for (const Row& row : rows) {
    REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, h.ns(), row.name).ok());
  }
  for (const Row& row : rows) {
    WaitUntil(row.name + " gone", [&] {
      return h.PodsOf(row.name).empty() &&
             kube::IsNotFound(hub.Get(api::v1alpha1::kTrainingJobs, h.ns(), row.name).status());
    });
  }
  h.Finish();
}

// Two kwok nodes of the test's own (1 GPU each, labelled and tainted
// kiln.dev/fault-test=<namespace> so that only the test's jobs go there),
// deleted again when it ends. Nodes an earlier run that was killed left
// behind go first.
class FaultNodes {
 public:
  static constexpr const char* kLabel = "kiln.dev/fault-test";

  FaultNodes(kube::Client& client, const std::string& owner) : client_(client), owner_(owner) {
    auto leftovers = client_.List(kube::resources::kNodes, "", {.label_selector = kLabel});
    REQUIRE(leftovers.ok());
    for (const auto& n : (*leftovers)["items"]) {
      (void)client_.Delete(kube::resources::kNodes, "", n["metadata"].value("name", ""));
    }
    for (int i = 0; i < 2; ++i) {
      const std::string name = owner + "-node-" + std::to_string(i);
      const json resources = {
          {"cpu", "8"}, {"memory", "64Gi"}, {"pods", "10"}, {"nvidia.com/gpu", "1"}};
      const Status created =
          client_
              .Create(
                  kube::resources::kNodes, "",
                  {{"apiVersion", "v1"},
                   {"kind", "Node"},
                   {"metadata",
                    {{"name", name},
                     {"labels",
                      {{"kubernetes.io/hostname", name},
                       {kLabel, owner},
                       {"nvidia.com/gpu.present", "true"},
                       {"nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"},
                       {"kiln.dev/rack", name},
                       {"kiln.dev/nvlink-domain", name}}},
                     {"annotations",
                      {{"kwok.x-k8s.io/node", "fake"}, {"node.alpha.kubernetes.io/ttl", "0"}}}}},
                   {"spec",
                    {{"taints",
                      json::array(
                          {{{"key", kLabel}, {"value", owner}, {"effect", "NoSchedule"}}})}}},
                   {"status", {{"capacity", resources}, {"allocatable", resources}}}})
              .status();
      INFO(created.ToString());
      REQUIRE(created.ok());
      names_.push_back(name);
    }
  }
  ~FaultNodes() {
    for (const auto& n : names_) (void)client_.Delete(kube::resources::kNodes, "", n);
  }

  // `job` placed on these nodes only.
  json OnThem(json job) const {
    job["spec"]["workers"]["nodeSelector"] = {{kLabel, owner_}};
    job["spec"]["workers"]["tolerations"] =
        json::array({{{"key", kLabel}, {"operator", "Exists"}, {"effect", "NoSchedule"}}});
    return job;
  }

  // Node `name` stops being Ready as a node whose kubelet reports it so:
  // kwok lets go of it (else its heartbeat says Ready again), then its Ready
  // condition turns False.
  Status MakeNotReady(const std::string& name) {
    KILN_RETURN_IF_ERROR(client_
                             .Patch(kube::resources::kNodes, "", name, kube::PatchType::kMerge,
                                    R"({"metadata":{"annotations":{"kwok.x-k8s.io/node":null}}})")
                             .status());
    const json status = {
        {"status",
         {{"conditions", json::array({{{"type", "Ready"},
                                       {"status", "False"},
                                       {"reason", "KubeletNotReady"},
                                       {"message", "container runtime is down"}}})}}}};
    return client_
        .Patch(kube::resources::kNodes, "", name, kube::PatchType::kMerge, status.dump(),
               {.subresource = "status"})
        .status();
  }

 private:
  kube::Client& client_;
  const std::string owner_;
  std::vector<std::string> names_;
};

// The node rows of the fault table: a worker's node turns NotReady, or is
// deleted, while the worker runs. No pod changes first (kwok no longer
// speaks for the node): the controller learns it from the member's node
// watch, restarts the gang with NodeFailure naming the node, and removes the
// old pod at once (no kubelet would finish a graceful deletion). Bounded at
// 30 s: for a deleted node Kubernetes' pod GC would only delete the pod
// after 40 s.
TEST_CASE("the fault table's node rows: a worker's node NotReady or deleted restarts the gang",
          "[integration][trainingjob]") {
  Hub h;
  kube::Client& hub = h.client();
  FaultNodes nodes(hub, h.ns());
  for (const char* name : {"notready", "deleted"}) {
    REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, h.ns(), nodes.OnThem(Job(h.ns(), name, 1, 1)))
                .ok());
  }
  std::map<std::string, std::string> node_of;
  for (const char* name : {"notready", "deleted"}) {
    WaitUntil(std::string(name) + " running", [&] {
      const json pods = h.PodsOf(name);
      if (pods.size() != 1 || pods[0]["status"].value("phase", "") != "Running" ||
          h.JobStatus(name).value("phase", "") != "Running") {
        return false;
      }
      node_of[name] = pods[0]["spec"].value("nodeName", "");
      return true;
    });
  }
  REQUIRE(node_of["notready"] != node_of["deleted"]);
  std::printf("trainingjob fault table, node rows (the node changed → the restart in status):\n");
  std::map<std::string, Clock::time_point> injected;
  injected["notready"] = Clock::now();
  const Status not_ready = nodes.MakeNotReady(node_of["notready"]);
  INFO(not_ready.ToString());
  REQUIRE(not_ready.ok());
  injected["deleted"] = Clock::now();
  REQUIRE(hub.Delete(kube::resources::kNodes, "", node_of["deleted"]).ok());

  for (const char* name : {"notready", "deleted"}) {
    json status;
    WaitUntil(
        std::string(name) + " restarted",
        [&] {
          status = h.JobStatus(name);
          return status.value("restarts", 0) == 1;
        },
        std::chrono::seconds(30));
    const double seconds = Seconds(Clock::now() - injected[name]);
    INFO(status.dump());
    REQUIRE(status.contains("restartHistory"));
    const json& record = status["restartHistory"][0];
    CHECK(record["reason"] == "NodeFailure");
    CHECK(record["node"] == node_of[name]);
    CHECK_THAT(record.value("message", ""),
               Catch::Contains(std::string(name) == "notready" ? "is NotReady" : "is deleted"));
    // The worker of attempt 0 is gone from the API (forced).
    WaitUntil(
        std::string(name) + "'s old worker removed",
        [&] {
          for (const auto& p : h.PodsOf(name)) {
            if (p["metadata"]["labels"][kAttemptLabel] == "0") return false;
          }
          return true;
        },
        std::chrono::seconds(30));
    std::printf("  %-22s -> %-18s %-7s in %.2f s\n",
                std::string(name) == "notready" ? "node NotReady" : "node deleted", "NodeFailure",
                "restart", seconds);
  }
  for (const char* name : {"notready", "deleted"}) {
    REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, h.ns(), name).ok());
  }
  for (const char* name : {"notready", "deleted"}) {
    WaitUntil(std::string(name) + " gone", [&] {
      return h.PodsOf(name).empty() &&
             kube::IsNotFound(hub.Get(api::v1alpha1::kTrainingJobs, h.ns(), name).status());
    });
  }
  h.Finish();
}

// bench/trainingjob_bench.sh's figures (hidden: not part of the suite):
// submit → every worker Running for gangs of KILN_BENCH_GANGS workers (1 GPU
// each; default "8 64 512"), then fault → the whole gang Running again over
// KILN_BENCH_FAULTS (default 20) faults on an 8-worker gang, alternating a
// deleted worker and a worker exiting 4, with the backoff fixed at 1 s.
// Prints p50 and p99 (over 20 samples: the largest); asserts only that
// every step happened.
std::string BenchEnv(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return std::string(v != nullptr && *v != '\0' ? v : fallback);
}

// Whether `workers` pods of the job's `attempt` are Running and so is the job.
bool AllRunning(Hub& h, const std::string& name, int workers, int attempt) {
  int n = 0;
  for (const auto& p : h.PodsOf(name)) {
    n += p["metadata"]["labels"][kAttemptLabel] == std::to_string(attempt) &&
                 p["status"].value("phase", "") == "Running"
             ? 1
             : 0;
  }
  return n == workers && h.JobStatus(name).value("phase", "") == "Running";
}

json BenchJob(Hub& h, const std::string& name, int workers) {
  json job = Job(h.ns(), name, workers, 1);
  job["spec"]["failurePolicy"] = {{"maxRestarts", 1000},
                                  {"backoff", {{"initial", "1s"}, {"max", "1s"}}}};
  return job;
}

// Submit → all KILN_BENCH_GANGS gangs' workers Running on `h`, one gang at a
// time, each deleted after.
void BenchSubmit(Hub& h, const std::string& label) {
  std::istringstream gangs(BenchEnv("KILN_BENCH_GANGS", "8 64 512"));
  for (int workers; gangs >> workers;) {
    WaitUntil("the capacity view sees the GPUs", [&] {
      auto c = h.capacity().Snapshot().cluster(h.member());
      return c != nullptr && c->free_gpus() >= workers;
    });
    const std::string name = "gang" + std::to_string(workers);
    const auto submitted = Clock::now();
    REQUIRE(
        h.client().Create(api::v1alpha1::kTrainingJobs, h.ns(), BenchJob(h, name, workers)).ok());
    // The controller's part: every pod created and its scheduling gate lifted.
    WaitUntil(
        name + " ungated",
        [&] {
          int ungated = 0;
          for (const auto& p : h.PodsOf(name)) {
            ungated += p["spec"].value("schedulingGates", json::array()).empty() ? 1 : 0;
          }
          return ungated == workers;
        },
        std::chrono::seconds(600));
    const double ungated = Seconds(Clock::now() - submitted);
    WaitUntil(
        name + " running", [&] { return AllRunning(h, name, workers, 0); },
        std::chrono::seconds(600));
    std::printf(
        "trainingjob_bench: submit → all %d workers created and ungated%s: %.2f s, Running: "
        "%.2f s\n",
        workers, label.c_str(), ungated, Seconds(Clock::now() - submitted));
    std::fflush(stdout);
    REQUIRE(h.client().Delete(api::v1alpha1::kTrainingJobs, h.ns(), name).ok());
    WaitUntil(
        name + " gone", [&] { return h.PodsOf(name).empty(); }, std::chrono::seconds(600));
  }
}

TEST_CASE("TrainingJob submit and recovery times on kwok", "[.][trainingjob-bench]") {
  // KILN_BENCH_CREATE_PARALLELISM="16 1 16 1": the submit figures once per
  // value, in that order, each on a controller of its own (A B A B).
  const std::string parallelism = BenchEnv("KILN_BENCH_CREATE_PARALLELISM", "");
  if (!parallelism.empty()) {
    std::istringstream values(parallelism);
    for (int p; values >> p;) {
      Hub hp(p);
      BenchSubmit(hp, " (create_parallelism " + std::to_string(p) + ")");
      hp.Finish();
    }
  }
  Hub h;
  kube::Client& hub = h.client();
  auto env = BenchEnv;
  auto all_running = [&](const std::string& name, int workers, int attempt) {
    return AllRunning(h, name, workers, attempt);
  };
  auto bench_job = [&](const std::string& name, int workers) { return BenchJob(h, name, workers); };
  if (parallelism.empty()) BenchSubmit(h, "");

  const int faults = std::stoi(env("KILN_BENCH_FAULTS", "20"));
  const int workers = 8;
  const std::string name = "recover";
  REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, h.ns(), bench_job(name, workers)).ok());
  WaitUntil(name + " running", [&] { return all_running(name, workers, 0); });
  std::vector<double> detected, recovered;
  for (int i = 0; i < faults; ++i) {
    const std::string pod = name + "-" + std::to_string(i) + "-" + std::to_string(i % workers);
    const auto fault = Clock::now();
    if (i % 2 == 0) {
      REQUIRE(hub.Delete(kube::resources::kPods, h.ns(), pod, {.grace_period_seconds = 0}).ok());
    } else {
      REQUIRE(h.SetPodStatus(pod, ExitedWorkerStatus(4, "Error")).ok());
    }
    WaitUntil("restart " + std::to_string(i + 1) + " recorded",
              [&] { return h.JobStatus(name).value("restarts", 0) == i + 1; });
    detected.push_back(Seconds(Clock::now() - fault));
    WaitUntil("attempt " + std::to_string(i + 1) + " running",
              [&] { return all_running(name, workers, i + 1); });
    recovered.push_back(Seconds(Clock::now() - fault));
  }
  auto quantile = [](std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::max<size_t>(rank, 1) - 1];
  };
  if (faults > 0) {
    std::printf(
        "trainingjob_bench: %d faults on a %d-worker gang (backoff 1 s): fault → restart recorded "
        "p50 %.2f s p99 %.2f s; fault → whole gang Running again p50 %.2f s p99 %.2f s\n",
        faults, workers, quantile(detected, 0.5), quantile(detected, 0.99),
        quantile(recovered, 0.5), quantile(recovered, 0.99));
  }
  REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, h.ns(), name).ok());
  WaitUntil(name + " gone", [&] { return h.PodsOf(name).empty(); });
  h.Finish();
}

// kiln-operator itself (the hub is its own member through a MemberCluster
// with spec.local), SIGKILLed at 20 random moments while its job's workers
// are deleted one gang at a time, and started again each time: the job is
// never lost, a poll of the pods every 20 ms never sees two gangs (live pods
// of two attempts) at once, and every injected fault is counted as exactly
// one restart.
// bench/trainingjob_scale_bench.sh's figures (hidden): KILN_BENCH_JOBS
// (default 1,000) one-worker jobs (1 GPU each) submitted one after the
// other, the time until all are Running and the reconciles that took; then
// every one of them queued at once, as a mass event would, and the rate at
// which the controller (2 workers) reconciles running jobs. Asserts only
// that every step happened.
TEST_CASE("TrainingJob reconciles per second with 1,000 jobs on kwok",
          "[.][trainingjob-scale-bench]") {
  Hub h;
  kube::Client& hub = h.client();
  const char* env = std::getenv("KILN_BENCH_JOBS");
  const int jobs = env != nullptr && *env != '\0' ? std::stoi(env) : 1000;
  WaitUntil(
      "the capacity view sees the GPUs",
      [&] {
        auto c = h.capacity().Snapshot().cluster(h.member());
        return c != nullptr && c->free_gpus() >= jobs;
      },
      std::chrono::seconds(600));
  auto name_of = [](int i) {
    char name[16];
    std::snprintf(name, sizeof name, "j%04d", i);
    return std::string(name);
  };
  auto running = [&] {
    auto list = hub.List(api::v1alpha1::kTrainingJobs, h.ns());
    int n = 0;
    if (!list.ok()) return 0;
    for (const auto& j : (*list)["items"]) {
      n += j.value("status", json::object()).value("phase", "") == "Running" ? 1 : 0;
    }
    return n;
  };
  const int64_t before = h.reconciles();
  const auto submitted = Clock::now();
  for (int i = 0; i < jobs; ++i) {
    json job = Job(h.ns(), name_of(i), 1, 1);
    REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, h.ns(), job).ok());
  }
  const double created = Seconds(Clock::now() - submitted);
  // Polled once a second: a list of every job is itself a load.
  auto poll = [](const std::string& what, const std::function<bool()>& done) {
    const auto until = Clock::now() + std::chrono::seconds(1200);
    while (!done()) {
      if (Clock::now() > until) FAIL("timed out waiting for " << what);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  };
  poll("every job Running", [&] { return running() == jobs; });
  const double all_running = Seconds(Clock::now() - submitted);
  const int64_t submit_reconciles = h.reconciles() - before;
  std::printf(
      "trainingjob_scale_bench: %d jobs created in %.1f s, all Running %.1f s after the first: "
      "%lld reconciles, %.0f/s\n",
      jobs, created, all_running, static_cast<long long>(submit_reconciles),
      static_cast<double>(submit_reconciles) / all_running);

  // Every running job queued at once: the controller's own rate.
  for (int round = 0; round < 3; ++round) {
    const int64_t start_count = h.reconciles();
    const auto start = Clock::now();
    for (int i = 0; i < jobs; ++i) h.Enqueue(name_of(i));
    WaitUntil(
        "every queued job reconciled", [&] { return h.reconciles() - start_count >= jobs; },
        std::chrono::seconds(600));
    const double took = Seconds(Clock::now() - start);
    std::printf(
        "trainingjob_scale_bench: %d running jobs queued at once, reconciled in %.2f s: "
        "%.0f reconciles/s\n",
        jobs, took, jobs / took);
  }
  CHECK(running() == jobs);

  for (int i = 0; i < jobs; ++i) {
    REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, h.ns(), name_of(i)).ok());
  }
  poll("every job gone", [&] {
    auto list = hub.List(api::v1alpha1::kTrainingJobs, h.ns());
    return list.ok() && (*list)["items"].empty();
  });
  h.Finish();
}

TEST_CASE("kiln-operator killed at 20 random points of placement and restart",
          "[integration][trainingjob]") {
  auto lc = testing::LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  REQUIRE(lc->clusters().size() >= 2);
  const testing::LocalCluster& hub_cluster = lc->clusters()[1];
  auto hub_client = lc->Client(hub_cluster);
  REQUIRE(hub_client.ok());
  kube::Client& hub = **hub_client;
  LiftLeftoverQuarantines(hub);
  // kiln-operator waits for every kiln kind's cache.
  for (const char* crd : {"memberclusters", "trainingjobs", "modeldeployments"}) {
    const Status applied =
        lc->ApplyCrd(hub_cluster, std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_" + crd + ".yaml",
                     std::string(crd) + ".kiln.dev");
    INFO(applied.ToString());
    REQUIRE(applied.ok());
  }
  const std::string ns = testing::UniqueName("kiln-tj-kill");
  REQUIRE(hub.Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", ns}}}}).ok());
  const std::string member = testing::UniqueName("tj-local");
  REQUIRE(hub.Create(api::v1alpha1::kMemberClusters, "",
                     {{"apiVersion", "kiln.dev/v1alpha1"},
                      {"kind", "MemberCluster"},
                      {"metadata", {{"name", member}}},
                      {"spec",
                       {{"local", true}, {"heartbeatInterval", "1s"}, {"unreachableAfter", "5s"}}}})
              .ok());

  testing::TempDir dir;
  int started = 0;
  auto start_operator = [&] {
    return std::make_unique<testing::BackgroundProcess>(
        std::vector<std::string>{KILN_OPERATOR_BIN, "--kubeconfig", hub_cluster.kubeconfig,
                                 "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
                                 "--member-secret-namespace", ns, "--shared-volume-host-path",
                                 "/tmp", "--shared-volume-mount-path", "/kiln"},
        dir.path() + "/operator-" + std::to_string(++started) + ".log");
  };
  auto op = start_operator();
  auto status = [&] {
    auto j = hub.Get(api::v1alpha1::kTrainingJobs, ns, "kill");
    return j.ok() ? j->value("status", json::object()) : json::object();
  };
  // Live pods (not being deleted) by attempt.
  auto live = [&] {
    std::map<std::string, std::vector<json>> by_attempt;
    auto list = hub.List(kube::resources::kPods, ns,
                         {.label_selector = std::string(kJobNameLabel) + "=kill"});
    if (!list.ok()) return by_attempt;
    for (const auto& p : (*list)["items"]) {
      if (p["metadata"].contains("deletionTimestamp")) continue;
      by_attempt[p["metadata"]["labels"].value(kAttemptLabel, "")].push_back(p);
    }
    return by_attempt;
  };
  std::atomic<bool> watching{true};
  std::mutex mu;
  std::vector<std::string> violations;
  std::thread watcher([&] {
    while (watching) {
      const auto gangs = live();
      if (gangs.size() > 1) {
        std::string v = "live pods of attempts";
        for (const auto& [attempt, pods] : gangs) v += " " + attempt;
        std::lock_guard<std::mutex> lock(mu);
        violations.push_back(v);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  // A failed REQUIRE unwinds through here: stop the watcher first (then the
  // operator's destructor kills it, so it never outlives the test).
  struct JoinOnExit {
    std::atomic<bool>& watching;
    std::thread& thread;
    ~JoinOnExit() {
      watching = false;
      if (thread.joinable()) thread.join();
    }
  } join_on_exit{watching, watcher};

  json job = Job(ns, "kill", 2, 8);
  job["spec"]["failurePolicy"] = {{"maxRestarts", 100}, {"backoff", {{"initial", "0s"}}}};
  REQUIRE(hub.Create(api::v1alpha1::kTrainingJobs, ns, job).ok());
  // A running gang of the current attempt, with every worker ready.
  auto running = [&](int* attempt) {
    const json s = status();
    if (s.value("phase", "") != "Running" || s.value("readyWorkers", 0) != 2) return false;
    *attempt = s.value("restarts", 0);
    const auto gangs = live();
    auto it = gangs.find(std::to_string(*attempt));
    return gangs.size() == 1 && it != gangs.end() && it->second.size() == 2;
  };
  int attempt = 0;
  WaitUntil("the gang running", [&] { return running(&attempt); });

  // Why the gang is not where the test wants it: for a failure's message.
  auto explain = [&] {
    std::string pods;
    for (const auto& [a, ps] : live()) pods += " attempt " + a + ": " + std::to_string(ps.size());
    const std::string log = op->Output();
    return "live pods:" + pods + "; status: " + status().dump() +
           "; operator log tail: " + log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  };
  // Waits (bounded) until the gang of the current attempt runs.
  auto wait_running = [&](std::chrono::seconds limit) {
    const auto start = Clock::now();
    while (!running(&attempt) && Clock::now() - start < limit) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return running(&attempt);
  };

  std::mt19937 rng(14);
  int faults = 0, last_fault_attempt = -1;
  for (int kill = 0; kill < 20; ++kill) {
    // Every fourth round waits for the gang to run again, so that faults
    // keep coming; the others kill wherever the operator happens to be.
    if (kill % 4 == 0 && !wait_running(std::chrono::seconds(60))) {
      FAIL("the gang never ran again before kill " << kill << "; " << explain());
    }
    // A worker of a running gang is deleted (once per attempt), so that
    // the kills land in detection, teardown, placement and creation.
    if (running(&attempt) && attempt != last_fault_attempt) {
      const std::string pod = "kill-" + std::to_string(attempt) + "-" + std::to_string(rng() % 2);
      if (hub.Delete(kube::resources::kPods, ns, pod, {.grace_period_seconds = 0}).ok()) {
        ++faults;
        last_fault_attempt = attempt;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 1500));
    op->Signal(SIGKILL);
    op->Wait();
    op = start_operator();
  }
  const auto last_kill = Clock::now();
  while (!(running(&attempt) && attempt == faults) &&
         Clock::now() - last_kill < std::chrono::seconds(90)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto settled = Clock::now() - last_kill;
  if (!(running(&attempt) && attempt == faults)) {
    FAIL("the gang is not running as attempt " << faults << " (the faults injected); "
                                               << explain());
  }
  watching = false;
  watcher.join();
  const json s = status();
  INFO(s.dump());
  std::printf(
      "trainingjob: 20 SIGKILLs of kiln-operator around %d worker faults: %d restarts counted, "
      "the gang running as attempt %d %.2f s after the last restart\n",
      faults, s.value("restarts", 0), attempt, Seconds(settled));
  CHECK(faults >= 5);
  CHECK(s.value("restarts", 0) == faults);
  CHECK(s.value("restartHistory", json::array()).size() == static_cast<size_t>(faults));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(violations.empty());
    for (size_t i = 0; i < violations.size() && i < 10; ++i) UNSCOPED_INFO(violations[i]);
  }
  REQUIRE(hub.Delete(api::v1alpha1::kTrainingJobs, ns, "kill").ok());
  WaitUntil("the job gone", [&] {
    return kube::IsNotFound(hub.Get(api::v1alpha1::kTrainingJobs, ns, "kill").status());
  });
  op->Signal(SIGTERM);
  op->Wait();
  CHECK(hub.Delete(api::v1alpha1::kMemberClusters, "", member).ok());
  CHECK(hub.Delete(kube::resources::kNamespaces, "", ns).ok());
}

}  // namespace
}  // namespace kiln::trainingjob
