#include "operator/controllers/trainingjob/reconciler.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "base/log.h"
#include "base/parallel_for.h"
#include "base/time_format.h"
#include "kube/api_error.h"
#include "operator/api/conditions.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/storage/credentials_copy.h"
#include "operator/controllers/storage/s3_access.h"
#include "operator/controllers/trainingjob/failure_classifier.h"
#include "operator/controllers/trainingjob/failure_policy.h"
#include "operator/fleet/member_namespace.h"
#include "operator/fleet/node_and_pod.h"
#include "operator/fleet/quarantine.h"
#include "operator/placement/placement.h"
#include "operator/placement/trainingjob_gang.h"
#include "operator/placement/well_known.h"

namespace kiln::trainingjob {
namespace {

namespace v1 = api::v1alpha1;
using nlohmann::json;
using std::chrono::milliseconds;

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

using api::SetCondition;

const v1::Condition* FindCondition(const v1::TrainingJobStatus& status, const std::string& type) {
  if (!status.conditions) return nullptr;
  for (const auto& c : *status.conditions) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

// status.placement → one node per rank.
std::vector<RankPlacement> Ranks(const std::vector<v1::ClusterPlacement>& placement) {
  std::vector<RankPlacement> ranks;
  for (const auto& c : placement) {
    for (const auto& node : c.nodes.value_or(std::vector<std::string>{})) {
      ranks.push_back({c.cluster, node});
    }
  }
  return ranks;
}

// The placement as status.placement: per cluster (in rank order), each
// worker's node.
std::vector<v1::ClusterPlacement> ToStatus(const placement::Placement& p) {
  std::vector<v1::ClusterPlacement> out;
  for (const auto& w : p.workers) {
    if (out.empty() || out.back().cluster != w.cluster) {
      out.push_back({w.cluster, 0, std::vector<std::string>{}});
    }
    out.back().workers = *out.back().workers + 1;
    out.back().nodes->push_back(w.node);
  }
  return out;
}

NodeHealth HealthOf(const fleet::Member& member, const std::string& node) {
  if (node.empty()) return NodeHealth::kReady;
  auto n = member.nodes().Get("", node);
  // The cache's NotFound (not the API's): the node is gone. A cache not
  // synced yet says nothing.
  if (!n.ok()) {
    return n.status().code() == StatusCode::kNotFound ? NodeHealth::kGone : NodeHealth::kReady;
  }
  const std::string ready = fleet::NodeReadyStatus(**n);
  return ready == "True"    ? NodeHealth::kReady
         : ready == "False" ? NodeHealth::kNotReady
                            : NodeHealth::kUnknown;
}

// HealthOf in member `cluster`; Ready while that member is not connected
// (nothing is known of its nodes).
NodeHealth HealthIn(const fleet::Members& members, const std::string& cluster,
                    const std::string& node) {
  auto member = members.Get(cluster);
  return member == nullptr ? NodeHealth::kReady : HealthOf(*member, node);
}

std::string Selector(const json& job, std::optional<int32_t> attempt) {
  std::string s = std::string(kJobUidLabel) + "=" + Str(job["metadata"], "uid");
  if (attempt) s += "," + std::string(kAttemptLabel) + "=" + std::to_string(*attempt);
  return s;
}

constexpr const char* kNodeRefusedReason = "NodeRefused";

// Since when `pod`'s scheduler has refused it (PodScheduled False,
// Unschedulable), if it has.
std::optional<std::chrono::system_clock::time_point> RefusedSince(const json& pod) {
  for (const json& c : pod.value("status", json::object()).value("conditions", json::array())) {
    if (c.value("type", "") != "PodScheduled") continue;
    if (c.value("status", "") != "False" || c.value("reason", "") != "Unschedulable") break;
    auto t = ParseRfc3339(c.value("lastTransitionTime", ""));
    if (!t.ok()) break;
    return std::chrono::time_point_cast<std::chrono::system_clock::duration>(*t);
  }
  return std::nullopt;
}

std::string RefusedMessage(const json& pod) {
  for (const json& c : pod.value("status", json::object()).value("conditions", json::array())) {
    if (c.value("type", "") == "PodScheduled") return c.value("message", "");
  }
  return "";
}

bool Gated(const json& pod) {
  const json spec = pod.value("spec", json::object());
  return spec.contains("schedulingGates") && spec["schedulingGates"].is_array() &&
         !spec["schedulingGates"].empty();
}

bool Ready(const json& pod) {
  for (const auto& c : pod.value("status", json::object()).value("conditions", json::array())) {
    if (c.value("type", "") == "Ready") return c.value("status", "") == "True";
  }
  return false;
}

// Whether `cluster` counts as answering: false while its MemberCluster is
// Unreachable. A cluster the snapshot does not hold yet (its connection is
// still being made) counts as answering.
bool Reachable(const placement::Snapshot& fleet, const std::string& cluster) {
  const auto* c = fleet.cluster(cluster);
  return c == nullptr || c->info().reachable;
}

// What the ranks of `ranks` hold in the capacity view: each its node and one
// worker's resources; a rank whose pod has ended (`ended[rank]`) holds
// nothing.
std::vector<fleet::WorkerHold> HoldsOf(const std::vector<RankPlacement>& ranks,
                                       const placement::Resources& per_worker,
                                       const std::vector<bool>& ended = {}) {
  std::vector<fleet::WorkerHold> holds;
  holds.reserve(ranks.size());
  for (size_t rank = 0; rank < ranks.size(); ++rank) {
    if (rank < ended.size() && ended[rank]) {
      holds.push_back({});
    } else {
      holds.push_back({ranks[rank].cluster, ranks[rank].node, per_worker});
    }
  }
  return holds;
}

std::optional<v1::S3Storage> S3Of(const v1::TrainingJobSpec& spec) {
  return spec.storage ? spec.storage->s3 : std::nullopt;
}

// Whether the newest restart must wait out the backoff (failure_policy.h).
bool NewestRestartBacksOff(const v1::TrainingJobStatus& status) {
  if (!status.restart_history || status.restart_history->empty()) return true;
  auto reason = FailureReasonFromName(status.restart_history->back().reason);
  return !reason || BacksOff(*reason);
}

}  // namespace

std::optional<runtime::Request> JobOfWorker(const json& pod) {
  const json meta = pod.value("metadata", json::object());
  const json labels = meta.value("labels", json::object());
  const std::string job = labels.value(kJobNameLabel, "");
  const std::string ns = meta.value("namespace", "");
  if (job.empty() || ns.empty()) return std::nullopt;
  return runtime::Request{ns, job};
}

TrainingJobReconciler::TrainingJobReconciler(kube::Client& hub, fleet::Members& members,
                                             fleet::CapacityView& capacity,
                                             runtime::EventRecorder* events,
                                             TrainingJobReconcilerOptions options)
    : hub_(hub),
      members_(members),
      capacity_(capacity),
      events_(events),
      options_(std::move(options)) {}

// How often a resize looks whether the old gang is gone (its pods' delete
// events wake it sooner).
constexpr milliseconds kResizePoll{2000};

StatusOr<bool> TrainingJobReconciler::DeleteWorkers(const json& job, int32_t attempt,
                                                    int64_t grace_seconds,
                                                    const std::set<std::string>* may_hold) {
  const std::string ns = Str(job["metadata"], "namespace");
  const std::string selector =
      Selector(job, attempt >= 0 ? std::optional<int32_t>(attempt) : std::nullopt);
  bool gone = true;
  auto waits_for = [&](const std::string& cluster) {
    return may_hold == nullptr || may_hold->contains(cluster);
  };
  // A MemberCluster not connected yet (a newly started operator) may hold
  // the job's objects: nothing is gone until it is connected and looked at.
  KILN_ASSIGN_OR_RETURN(json clusters, hub_.List(v1::kMemberClusters, ""));
  for (const auto& mc : clusters["items"]) {
    const std::string name = Str(mc["metadata"], "name");
    if (members_.Get(name) == nullptr && waits_for(name)) gone = false;
  }
  const placement::Snapshot fleet = capacity_.Snapshot();
  for (const std::string& name : members_.Names()) {
    auto member = members_.Get(name);
    if (member == nullptr) continue;
    if (!Reachable(fleet, name)) {
      // Not even tried: a lost cluster's calls only time out. Its objects
      // are deleted once it answers (SweepLostClusters, or this again).
      if (waits_for(name)) gone = false;
      continue;
    }
    // kiln's copies of the S3 credentials Secret outlive attempts: they go
    // with the whole gang (deletion, suspension).
    std::vector<const kube::Resource*> kinds = {&kube::resources::kPods,
                                                &kube::resources::kServices};
    if (attempt < 0) kinds.push_back(&kube::resources::kSecrets);
    for (const kube::Resource* r : kinds) {
      // A cluster that cannot be reached keeps its objects until it answers
      // again; the job's deletion does not wait for it (its finalizer does).
      auto list = member->client().List(*r, ns, {.label_selector = selector});
      if (!list.ok()) {
        gone = false;
        continue;
      }
      for (const auto& item : (*list)["items"]) {
        gone = false;
        const std::string n = Str(item["metadata"], "name");
        // A pod on a node that is gone or not Ready has no kubelet to finish
        // its deletion: it would stay Terminating (holding the job's
        // finalizer) until the node came back. It is removed at once; a
        // worker still running there behind a partition cannot harm the next
        // attempt, whose checkpoints its fence guards (docs/trainingjob.md).
        std::optional<int64_t> grace = grace_seconds;
        if (r == &kube::resources::kPods &&
            HealthOf(*member, item.value("spec", json::object()).value("nodeName", "")) !=
                NodeHealth::kReady) {
          grace = 0;
        }
        Status s = member->client().Delete(*r, ns, n, {.grace_period_seconds = grace}).status();
        if (!s.ok() && !kube::IsNotFound(s)) return s;
      }
    }
  }
  return gone;
}

void TrainingJobReconciler::RefreshProgress(const std::string& key, const std::string& ns,
                                            const RankPlacement& rank0, const std::string& pod,
                                            int32_t port, v1::TrainingJobStatus& status) {
  if (options_.progress_reader == nullptr) return;
  const auto now = options_.now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& last = memory_[key].progress_read;
    if (last && now - *last < options_.progress_interval) return;
    last = now;
  }
  auto member = members_.Get(rank0.cluster);
  if (member == nullptr) return;
  auto progress = options_.progress_reader->Read(*member, ns, pod, port);
  if (!progress.ok()) {
    // Advice for the status only: the next interval tries again.
    log::Logger("trainingjob")
        .Debug("cannot read the training progress",
               {{"job", key}, {"pod", pod}, {"error", progress.status().ToString()}});
    return;
  }
  ApplyProgress(*progress, status);
}

std::vector<std::string> TrainingJobReconciler::Quarantine(
    const std::string& key, v1::TrainingJobStatus& status,
    const std::optional<v1::FailurePolicy>& policy) {
  const auto now = options_.now();
  const auto faults = NodeFaults(status.restart_history.value_or(std::vector<v1::RestartRecord>{}));
  std::vector<std::string> newly;
  for (const NodeKey& node : NodesToQuarantine(faults, policy, now)) {
    const auto ends = QuarantineEnds(faults, policy, node, now);
    if (!ends) continue;
    // The taint goes on before the status names the node: its value says
    // when it ends, so a taint whose status write is lost still ends.
    if (auto member = members_.Get(node.cluster)) {
      Status s = fleet::QuarantineNode(member->client(), node.node, *ends);
      if (!s.ok() && !kube::IsNotFound(s)) {
        // This job's own placement still avoids the node (status below).
        log::Logger("trainingjob")
            .Warn("cannot taint a quarantined node", {{"job", key},
                                                      {"cluster", node.cluster},
                                                      {"node", node.node},
                                                      {"error", s.ToString()}});
      }
    }
    const std::string entry = node.cluster + "/" + node.node;
    if (!status.quarantined_nodes) status.quarantined_nodes.emplace();
    auto& listed = *status.quarantined_nodes;
    if (std::find(listed.begin(), listed.end(), entry) == listed.end()) {
      listed.push_back(entry);
      newly.push_back(entry + " until " + FormatRfc3339(*ends));
    }
  }
  return newly;
}

bool TrainingJobReconciler::SweepLostClusters(const std::string& key, const json& job,
                                              int32_t attempt,
                                              const v1::TrainingJobStatus& status) {
  std::set<std::string> lost;
  for (const auto& r : status.restart_history.value_or(std::vector<v1::RestartRecord>{})) {
    if (r.reason == FailureReasonName(FailureReason::kClusterUnavailable) && r.cluster) {
      lost.insert(*r.cluster);
    }
  }
  if (lost.empty()) return true;
  const placement::Snapshot fleet = capacity_.Snapshot();
  const std::string ns = Str(job["metadata"], "namespace");
  const std::string selector =
      Selector(job, std::nullopt) + "," + kAttemptLabel + "!=" + std::to_string(attempt);
  bool clean = true;
  for (const std::string& cluster : lost) {
    const std::string done = cluster + "@" + std::to_string(attempt);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (memory_[key].swept.contains(done)) continue;
    }
    // A MemberCluster that is gone leaves nothing kiln can reach; if it is
    // registered again, the next reconcile sweeps it. One not connected yet
    // is looked at once it is.
    auto member = members_.Get(cluster);
    if (member == nullptr) {
      auto mc = hub_.Get(v1::kMemberClusters, "", cluster);
      if (!kube::IsNotFound(mc.status())) clean = false;
      continue;
    }
    if (!Reachable(fleet, cluster)) {
      clean = false;
      continue;
    }
    bool swept = true;
    int deleted = 0;
    for (const kube::Resource* r : {&kube::resources::kPods, &kube::resources::kServices}) {
      auto list = member->client().List(*r, ns, {.label_selector = selector});
      if (!list.ok()) {
        swept = false;
        continue;
      }
      for (const auto& item : (*list)["items"]) {
        Status s = member->client()
                       .Delete(*r, ns, Str(item["metadata"], "name"),
                               {.grace_period_seconds = kFailedGangGraceSeconds})
                       .status();
        if (s.ok()) ++deleted;
        if (!s.ok() && !kube::IsNotFound(s)) swept = false;
      }
    }
    if (!swept) {
      clean = false;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      memory_[key].swept.insert(done);
    }
    if (deleted > 0) {
      log::Logger("trainingjob")
          .Info("deleted what earlier attempts left in a member cluster that answers again",
                {{"job", key}, {"cluster", cluster}, {"objects", std::to_string(deleted)}});
      if (events_ != nullptr) {
        events_->Record(job, runtime::EventType::kNormal, "StaleWorkersDeleted",
                        "member cluster " + cluster + " answers again: deleted " +
                            std::to_string(deleted) +
                            " pods and Services that earlier attempts left there");
      }
    }
  }
  return clean;
}

StatusOr<bool> TrainingJobReconciler::ClusterLost(const std::string& cluster,
                                                  const placement::Snapshot& fleet) {
  if (members_.Get(cluster) != nullptr) return !Reachable(fleet, cluster);
  auto mc = hub_.Get(v1::kMemberClusters, "", cluster);
  if (!mc.ok()) {
    if (kube::IsNotFound(mc.status())) return true;
    return mc.status();
  }
  for (const auto& c : mc->value("status", json::object()).value("conditions", json::array())) {
    if (c.value("type", "") == "Unreachable") return c.value("status", "") == "True";
  }
  return false;
}

StatusOr<bool> TrainingJobReconciler::IsHub(const std::string& cluster) {
  if (!options_.hub_member.empty() && cluster == options_.hub_member) return true;
  auto mc = hub_.Get(v1::kMemberClusters, "", cluster);
  if (!mc.ok()) {
    if (kube::IsNotFound(mc.status())) return false;
    return mc.status();
  }
  return mc->value("spec", json::object()).value("local", false);
}

StatusOr<TrainingJobReconciler::Credentials> TrainingJobReconciler::ReadCredentials(
    const std::string& ns, const v1::S3Storage& s3) {
  const std::string& name = s3.credentials_secret_ref.name;
  auto got = hub_.Get(kube::resources::kSecrets, ns, name);
  if (!got.ok() && !kube::IsNotFound(got.status())) return got.status();
  Credentials out;
  if (got.ok()) out.secret = std::move(*got);
  out.problem = s3access::CheckSecret(out.secret, ns, name);
  if (out.problem) out.secret = nullptr;
  return out;
}

Status TrainingJobReconciler::SyncCredentialsCopy(kube::Client& member, const v1::TrainingJob& job,
                                                  const json& secret) {
  return s3access::SyncCredentialsCopy(member, BuildCredentialsCopy(job, secret), kJobUidLabel,
                                       Str(job.metadata, "uid"), "job");
}

ResizeDecision TrainingJobReconciler::PlanResize(
    const std::string& key, const v1::TrainingJob& job, const std::vector<RankPlacement>& ranks,
    const std::string& holder, std::optional<std::chrono::system_clock::time_point> running_since,
    std::optional<milliseconds>& recheck) {
  const auto size = static_cast<int32_t>(ranks.size());
  if (size == job.spec.workers.replicas) return {};
  if (size < job.spec.workers.replicas) {
    // Growth: at most once per interval, after the gang has run one.
    const auto now = options_.now();
    std::lock_guard<std::mutex> lock(mu_);
    auto& last = memory_[key].grow_checked;
    auto due = last ? *last + options_.grow_interval : now;
    if (running_since) due = std::max(due, *running_since + options_.grow_interval);
    if (now < due) {
      recheck = std::chrono::ceil<milliseconds>(due - now);
      return {};
    }
    last = now;
    recheck = options_.grow_interval;
  }
  return DecideResize(job, ranks, holder, capacity_.Snapshot());
}

bool TrainingJobReconciler::FirstIgnored(const std::string& key, const std::string& pod) {
  std::lock_guard<std::mutex> lock(mu_);
  return memory_[key].ignored_pods.insert(pod).second;
}

void TrainingJobReconciler::Forget(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  memory_.erase(key);
}

void TrainingJobReconciler::RecountMember(const std::string& cluster, const std::string& node) {
  // A refusal says the view is wrong about the node: the member's cached
  // pods are fed to it again. Idempotent (a pod it counts already replaces
  // itself), so a pod it had lost counts again before the gang is placed
  // anew; how much it had missed on the node is logged.
  auto member = members_.Get(cluster);
  if (member == nullptr) return;
  auto cached = member->pods().List();
  if (!cached.ok()) return;
  auto free_gpus = [&] {
    auto free = capacity_.Snapshot().Free(cluster, node);
    return free.ok() ? free->gpus : int64_t{-1};
  };
  const int64_t before = free_gpus();
  for (const kube::Object& pod : *cached) capacity_.OnPod(cluster, *pod);
  const int64_t after = free_gpus();
  log::Logger("trainingjob")
      .Warn("a member's scheduler refused a placement; its pods counted again",
            {{"cluster", cluster},
             {"node", node},
             {"freeGpusBefore", before},
             {"freeGpusAfter", after}});
}

Status TrainingJobReconciler::RebuildHolds() {
  if (holds_rebuilt_.load()) return Status::Ok();
  std::lock_guard<std::mutex> lock(rebuild_mu_);
  if (holds_rebuilt_.load()) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(json list, hub_.List(v1::kTrainingJobs, ""));
  int held = 0;
  for (const json& item : list.value("items", json::array())) {
    v1::TrainingJob job;
    try {
      job = item.get<v1::TrainingJob>();
    } catch (const std::exception&) {
      continue;  // Not readable: its own reconcile says so; it holds nothing.
    }
    if (!job.status || !job.status->placement || job.status->placement->empty() ||
        job.status->phase.value_or("") != "Scheduled") {
      continue;
    }
    auto gang = placement::FromTrainingJob(job);
    if (!gang.ok()) continue;
    capacity_.Hold(
        gang->name,
        fleet::AttemptHolder(Str(item["metadata"], "uid"), job.status->restarts.value_or(0)),
        HoldsOf(Ranks(*job.status->placement), gang->PerWorker()));
    ++held;
  }
  log::Logger("trainingjob").Info("placements held again from the jobs' status", {{"jobs", held}});
  holds_rebuilt_.store(true);
  return Status::Ok();
}

StatusOr<runtime::Result> TrainingJobReconciler::Reconcile(const runtime::Context& ctx,
                                                           const runtime::Request& request) {
  (void)ctx;  // The client bounds every call by it (base/context.h).
  const auto& kJobs = v1::kTrainingJobs;
  auto got = hub_.Get(kJobs, request.ns, request.name);
  if (!got.ok()) {
    if (kube::IsNotFound(got.status())) {
      capacity_.Release(request.Key());
      Forget(request.Key());
      if (options_.metrics != nullptr) options_.metrics->SetPhase(request.ns, request.name, "");
      return runtime::Result{};
    }
    return got.status();
  }
  json obj = std::move(*got);
  json& meta = obj["metadata"];
  const std::string now = FormatRfc3339(options_.now());
  std::vector<std::string> finalizers = meta.value("finalizers", std::vector<std::string>{});
  const bool has_finalizer =
      std::find(finalizers.begin(), finalizers.end(), kFinalizer) != finalizers.end();

  // 1. Deletion, and the finalizer.
  if (meta.contains("deletionTimestamp")) {
    capacity_.Release(request.Key());
    if (!has_finalizer) return runtime::Result{};
    // Only the members the job's status names (its placement, its restarts'
    // clusters) can hold its objects: one that never connected, or is lost
    // and took no part, does not hold up the finalizer.
    std::set<std::string> used;
    const json st = obj.value("status", json::object());
    for (const auto& c : st.value("placement", json::array())) used.insert(Str(c, "cluster"));
    for (const auto& r : st.value("restartHistory", json::array())) used.insert(Str(r, "cluster"));
    KILN_ASSIGN_OR_RETURN(bool gone, DeleteWorkers(obj, -1, kFailedGangGraceSeconds, &used));
    if (!gone) return runtime::Result{.requeue_after = options_.resync};
    std::erase(finalizers, std::string(kFinalizer));
    json patch = {
        {"metadata", {{"finalizers", finalizers}, {"resourceVersion", meta["resourceVersion"]}}}};
    KILN_RETURN_IF_ERROR(
        hub_.Patch(kJobs, request.ns, request.name, kube::PatchType::kMerge, patch.dump())
            .status());
    return runtime::Result{};
  }
  if (!has_finalizer) {
    finalizers.push_back(kFinalizer);
    json patch = {
        {"metadata", {{"finalizers", finalizers}, {"resourceVersion", meta["resourceVersion"]}}}};
    // `meta` refers into the object replaced here: not used past this point.
    KILN_ASSIGN_OR_RETURN(
        obj, hub_.Patch(kJobs, request.ns, request.name, kube::PatchType::kMerge, patch.dump()));
  }

  v1::TrainingJob job;
  try {
    job = obj.get<v1::TrainingJob>();
  } catch (const std::exception& e) {
    return runtime::Terminal(
        Status::InvalidArgument(request.Key() + ": not a readable TrainingJob: " + e.what()));
  }
  const std::optional<int64_t> generation =
      obj["metadata"].contains("generation")
          ? std::optional<int64_t>(obj["metadata"]["generation"].get<int64_t>())
          : std::nullopt;
  v1::TrainingJobStatus status = job.status.value_or(v1::TrainingJobStatus{});
  const v1::TrainingJobStatus before = status;
  const std::string phase = status.phase.value_or("Pending");
  const int32_t attempt = status.restarts.value_or(0);
  // Level-based: a job without a decision holds nothing (e.g. a hold rebuilt
  // from a status read just before the job restarted).
  if (!status.placement || status.placement->empty()) capacity_.Release(request.Key());
  auto write = [&]() -> Status {
    status.observed_generation = generation;
    if (options_.metrics != nullptr) {
      options_.metrics->SetPhase(request.ns, request.name, status.phase.value_or("Pending"));
    }
    if (status == before) return Status::Ok();
    json updated = obj;
    updated["status"] = status;
    return hub_.UpdateStatus(kJobs, updated).status();
  };
  auto record = [&](runtime::EventType type, const std::string& reason, const std::string& msg) {
    if (events_ != nullptr) events_->Record(obj, type, reason, msg);
  };

  // 2. Finished or suspended jobs hold no pods.
  if (phase == "Succeeded" || phase == "Failed") {
    capacity_.Release(request.Key());
    // A cluster lost before the end may still hold earlier attempts' pods:
    // they go once it answers (looked at again every kLostClusterRetry).
    const bool clean = SweepLostClusters(request.Key(), obj, attempt, status);
    if (clean) Forget(request.Key());
    const runtime::Result idle =
        clean ? runtime::Result{} : runtime::Result{.requeue_after = kLostClusterRetry};
    if (options_.metrics != nullptr) options_.metrics->SetPhase(request.ns, request.name, phase);
    // ttlSecondsAfterFinished: the job goes (through its finalizer, which
    // deletes what is left of its workers); its checkpoints stay.
    if (!job.spec.ttl_seconds_after_finished || !status.completion_time) return idle;
    auto finished = ParseRfc3339(*status.completion_time);
    if (!finished.ok()) return idle;
    const auto due = std::chrono::time_point_cast<std::chrono::system_clock::duration>(*finished) +
                     std::chrono::seconds(*job.spec.ttl_seconds_after_finished);
    if (options_.now() < due) {
      return runtime::Result{.requeue_after =
                                 std::chrono::ceil<milliseconds>(due - options_.now())};
    }
    Status deleted = hub_.Delete(kJobs, request.ns, request.name,
                                 {.precondition_uid = Str(obj["metadata"], "uid")})
                         .status();
    if (!deleted.ok() && !kube::IsNotFound(deleted)) return deleted;
    log::Logger("trainingjob")
        .Info("deleted a finished job after ttlSecondsAfterFinished",
              {{"job", request.Key()}, {"phase", phase}});
    return runtime::Result{};
  }
  // Quarantines whose window has passed no longer keep this job off their
  // nodes (the MemberCluster controller lifts the taints themselves).
  if (status.quarantined_nodes) {
    std::vector<std::string> still;
    for (const NodeKey& n : NodesToQuarantine(
             NodeFaults(status.restart_history.value_or(std::vector<v1::RestartRecord>{})),
             job.spec.failure_policy, options_.now())) {
      still.push_back(n.cluster + "/" + n.node);
    }
    std::erase_if(*status.quarantined_nodes, [&](const std::string& entry) {
      return std::find(still.begin(), still.end(), entry) == still.end();
    });
    if (status.quarantined_nodes->empty()) status.quarantined_nodes.reset();
  }
  if (job.spec.suspend.value_or(false)) {
    // The workers get the long grace period: each saves a checkpoint on
    // SIGTERM, which the resumed gang starts from.
    capacity_.Release(request.Key());
    KILN_ASSIGN_OR_RETURN(bool gone, DeleteWorkers(obj, -1, kSuspendGraceSeconds));
    if (phase != "Suspended") {
      record(runtime::EventType::kNormal, "Suspended",
             "spec.suspend is true: the gang checkpoints and stops");
    }
    status.phase = "Suspended";
    status.placement.reset();
    status.ready_workers = 0;
    SetCondition(status, "Suspended", true, "Suspended", "spec.suspend is true", now, generation);
    if (const v1::Condition* r = FindCondition(status, "Resizing"); r && r->status == "True") {
      // The resumed gang is placed at the size asked for then.
      SetCondition(status, "Resizing", false, "Suspended", "spec.suspend is true", now, generation);
    }
    if (const v1::Condition* r = FindCondition(status, "Running"); r && r->status == "True") {
      SetCondition(status, "Running", false, "Suspended", "spec.suspend is true", now, generation);
    }
    KILN_RETURN_IF_ERROR(write());
    return gone ? runtime::Result{} : runtime::Result{.requeue_after = options_.resync};
  }
  if (phase == "Suspended") {
    // Resumed: the suspended gang must be gone first (its pods' names are
    // the ones the resumed attempt uses, and its checkpoint must be written).
    KILN_ASSIGN_OR_RETURN(bool gone, DeleteWorkers(obj, -1, kSuspendGraceSeconds));
    if (!gone) return runtime::Result{.requeue_after = options_.resync};
  }
  if (const v1::Condition* s = FindCondition(status, "Suspended"); s && s->status == "True") {
    SetCondition(status, "Suspended", false, "Resumed", "spec.suspend is false", now, generation);
    record(runtime::EventType::kNormal, "Resumed",
           "spec.suspend is false: the gang resumes from its newest checkpoint");
  }

  if (phase == "Resizing" && status.placement && !status.placement->empty()) {
    // A resize under way: the gang checkpoints (SIGTERM) and goes; then it
    // is placed again below, in the same attempt, at the size that fits.
    // Its pods ending meanwhile are not failures.
    capacity_.Release(request.Key());
    KILN_ASSIGN_OR_RETURN(bool gone, DeleteWorkers(obj, attempt, kSuspendGraceSeconds));
    if (!gone) return runtime::Result{.requeue_after = std::min(options_.resync, kResizePoll)};
    status.placement.reset();
    status.ready_workers = 0;
  }

  // What a lost cluster still holds of earlier attempts, once it answers.
  SweepLostClusters(request.Key(), obj, attempt, status);

  // S3 credentials: no worker starts without them. A running gang keeps
  // running (its pods hold the Secret already); a new one waits, looked at
  // again every unschedulable_retry (Secrets are not watched).
  const std::optional<v1::S3Storage> s3 = S3Of(job.spec);
  json credentials;
  if (s3) {
    KILN_ASSIGN_OR_RETURN(Credentials checked, ReadCredentials(request.ns, *s3));
    if (checked.problem) {
      const v1::Condition* was = FindCondition(status, s3access::kCredentialsReadyCondition);
      const bool news =
          was == nullptr || was->status != "False" || was->message != checked.problem->message;
      SetCondition(status, s3access::kCredentialsReadyCondition, false, checked.problem->reason,
                   checked.problem->message, now, generation);
      if (news) {
        record(runtime::EventType::kWarning, checked.problem->reason, checked.problem->message);
      }
      if (phase != "Running") {
        status.phase = phase;  // Pending, or Restarting.
        KILN_RETURN_IF_ERROR(write());
        return runtime::Result{.requeue_after = options_.unschedulable_retry};
      }
    } else {
      SetCondition(status, s3access::kCredentialsReadyCondition, true, "SecretFound",
                   "Secret " + request.ns + "/" + s3->credentials_secret_ref.name +
                       " holds the S3 credentials",
                   now, generation);
      credentials = std::move(checked.secret);
    }
  }

  // A restart waits out its backoff before the gang is placed again (a
  // lost cluster's does not).
  if (phase == "Restarting" && NewestRestartBacksOff(status)) {
    // Counted from the newest restart record (milliseconds; the condition's
    // time has whole seconds and would cut the backoff short).
    const v1::Condition* r = FindCondition(status, "Restarting");
    const std::string* since_text = status.restart_history && !status.restart_history->empty()
                                        ? &status.restart_history->back().time
                                        : (r != nullptr ? &r->last_transition_time : nullptr);
    if (since_text != nullptr) {
      auto since = ParseRfc3339(*since_text);
      const auto due =
          since.ok() ? std::chrono::time_point_cast<std::chrono::system_clock::duration>(*since) +
                           RestartDelay(job.spec.failure_policy, std::max(0, attempt - 1))
                     : options_.now();
      if (options_.now() < due) {
        return runtime::Result{.requeue_after =
                                   std::chrono::ceil<milliseconds>(due - options_.now())};
      }
    }
  }

  // 3. Place the gang, writing the decision first.
  if (!status.placement || status.placement->empty()) {
    auto gang = placement::FromTrainingJob(job);
    if (!gang.ok()) return runtime::Terminal(gang.status());
    gang->queue_order = 0;
    // An earlier operator's decisions hold their GPUs before this one's.
    KILN_RETURN_IF_ERROR(RebuildHolds());
    auto placed =
        capacity_.PlaceAndHold(*gang, fleet::AttemptHolder(Str(obj["metadata"], "uid"), attempt));
    if (!placed.ok()) {
      const auto* why = placed.status().detail<placement::PlacementFailure>();
      const std::string reason = why != nullptr ? why->reason : "Unschedulable";
      status.phase = phase == "Restarting" ? "Restarting" : "Pending";
      SetCondition(status, "Scheduled", false, reason, placed.status().message(), now, generation);
      KILN_RETURN_IF_ERROR(write());
      record(runtime::EventType::kWarning, "FailedScheduling", placed.status().message());
      return runtime::Result{.requeue_after = options_.unschedulable_retry};
    }
    status.placement = ToStatus(*placed);
    status.phase = "Scheduled";
    status.replicas = placed->replicas;
    status.selector = Selector(obj, std::nullopt);
    std::string where;
    for (const auto& c : *status.placement) {
      where += (where.empty() ? "" : ", ") + std::to_string(*c.workers) + " on " + c.cluster;
    }
    SetCondition(status, "Scheduled", true, "Placed",
                 std::to_string(placed->replicas) + " workers: " + where, now, generation);
    if (Status written = write(); !written.ok()) {
      // Not decided after all (a conflict, or no answer: the next
      // reconcile reads which, and holds it again if it was written).
      capacity_.Release(request.Key());
      return written;
    }
    record(runtime::EventType::kNormal, "Scheduled",
           "attempt " + std::to_string(attempt) + ": " + where);
    return runtime::Result{.requeue_after = milliseconds(1)};  // Act on the written decision.
  }

  // 4. The attempt's objects in the members; the gates lift once all exist.
  const std::vector<RankPlacement> ranks = Ranks(*status.placement);
  WorkerPodOptions pod_options{.volume = options_.volume, .attempt = attempt};
  // The hub's pods use the job's Secret; other members kiln's copy of it.
  std::map<std::string, bool> hub_cluster;
  if (s3) {
    for (const RankPlacement& r : ranks) {
      if (hub_cluster.contains(r.cluster)) continue;
      KILN_ASSIGN_OR_RETURN(hub_cluster[r.cluster], IsHub(r.cluster));
      if (!hub_cluster[r.cluster]) {
        pod_options.credentials_secrets[r.cluster] = CredentialsCopyName(request.name);
      }
    }
  }
  auto objects = BuildGang(job, ranks, pod_options);
  if (!objects.ok()) {
    capacity_.Release(request.Key());
    status.phase = "Failed";
    status.completion_time = now;
    SetCondition(status, "Failed", true, "InvalidSpec", objects.status().message(), now,
                 generation);
    KILN_RETURN_IF_ERROR(write());
    record(runtime::EventType::kWarning, "InvalidSpec", objects.status().message());
    return runtime::Result{};
  }
  const std::string ns = request.ns;
  std::vector<json> pods(ranks.size());
  std::vector<bool> seen(ranks.size(), false);
  std::optional<WorkerFailure> failure;
  // The attempt's pods, from every member the gang uses (a Service's
  // clusters are exactly those). A member declared Unreachable, or whose
  // MemberCluster is gone, has lost its workers: the gang restarts.
  const placement::Snapshot fleet = capacity_.Snapshot();
  for (const std::string& cluster : objects->service_clusters) {
    KILN_ASSIGN_OR_RETURN(bool lost, ClusterLost(cluster, fleet));
    if (lost) {
      failure = WorkerFailure{.cluster = cluster, .cluster_reachable = false};
      break;
    }
    auto member = members_.Get(cluster);
    // Not connected yet (a newly started operator's first moments): the
    // gang is left alone until it is.
    if (member == nullptr) return runtime::Result{.requeue_after = options_.resync};
    auto list = member->client().List(kube::resources::kPods, ns,
                                      {.label_selector = Selector(obj, attempt)});
    if (!list.ok()) {
      if (kube::IsNotFound(list.status())) return list.status();
      // Unreachable now: the MemberCluster controller decides when that is
      // a lost cluster; until then the gang is left alone.
      return runtime::Result{.requeue_after = options_.resync};
    }
    for (const auto& item : (*list)["items"]) {
      const std::string rank_text =
          item["metadata"].value("labels", json::object()).value(kRankLabel, "");
      const int rank = rank_text.empty() ? -1 : std::stoi(rank_text);
      if (rank >= 0 && rank < static_cast<int>(ranks.size()) &&
          ranks[static_cast<size_t>(rank)].cluster == cluster) {
        pods[static_cast<size_t>(rank)] = item;
        seen[static_cast<size_t>(rank)] = true;
      }
    }
  }
  // A released gang that its member's scheduler will not bind waits for
  // nothing: the node kiln placed a worker on has no room after all (a pod
  // kiln did not count, or a view that was wrong; found by the chaos suite,
  // where a gang was placed on a full node and stayed Pending). After
  // refused_timeout the attempt's pods go and the gang is placed again, in
  // the same attempt (no worker started). The condition carries the
  // decision, so an operator restarted meanwhile finishes it.
  if (!failure && status.phase.value_or("") == "Scheduled") {
    const v1::Condition* scheduled = FindCondition(status, "Scheduled");
    bool refused = scheduled != nullptr && scheduled->status == "False" &&
                   scheduled->reason == kNodeRefusedReason;
    for (size_t rank = 0; rank < ranks.size() && !refused; ++rank) {
      if (!seen[rank] || Gated(pods[rank])) continue;
      const auto refused_since = RefusedSince(pods[rank]);
      if (!refused_since || options_.now() - *refused_since < options_.refused_timeout) continue;
      refused = true;
      const std::string why =
          "the scheduler of member cluster " + ranks[rank].cluster + " has not bound worker " +
          Str(pods[rank]["metadata"], "name") + " to node " + ranks[rank].node + " for " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::seconds>(options_.now() - *refused_since)
                  .count()) +
          " s (" + RefusedMessage(pods[rank]) + "): placing the gang again";
      SetCondition(status, "Scheduled", false, kNodeRefusedReason, why, now, generation);
      record(runtime::EventType::kWarning, kNodeRefusedReason, why);
      RecountMember(ranks[rank].cluster, ranks[rank].node);
    }
    if (refused) {
      capacity_.Release(request.Key());
      KILN_ASSIGN_OR_RETURN(bool gone, DeleteWorkers(obj, attempt, 0));
      if (gone) {
        status.placement.reset();
        status.ready_workers = 0;
        status.phase = "Pending";
      }
      KILN_RETURN_IF_ERROR(write());
      return runtime::Result{.requeue_after = gone ? milliseconds(1) : milliseconds(500)};
    }
  }
  // Objects are made only while the attempt is being created (phase
  // Scheduled); later a missing pod is a failure, and a running gang costs
  // no writes.
  const bool created_before = status.phase.value_or("") != "Scheduled";
  if (!failure && !created_before) {
    // The decision holds its nodes until its pods are bound and count for
    // themselves (the view skips those); a pod that has ended holds nothing.
    // Level-based: this also restores a hold lost with the memory of an
    // earlier operator.
    auto gang = placement::FromTrainingJob(job);
    if (gang.ok()) {
      std::vector<bool> ended(ranks.size(), false);
      for (size_t rank = 0; rank < ranks.size(); ++rank) {
        ended[rank] = seen[rank] && fleet::PodTerminated(pods[rank]);
      }
      capacity_.Hold(request.Key(), fleet::AttemptHolder(Str(obj["metadata"], "uid"), attempt),
                     HoldsOf(ranks, gang->PerWorker(), ended));
    }
  }
  if (!failure && !created_before) {
    for (size_t i = 0; i < objects->services.size(); ++i) {
      auto member = members_.Get(objects->service_clusters[i]);
      if (member == nullptr) continue;
      KILN_RETURN_IF_ERROR(fleet::EnsureNamespace(member->client(), ns));
      const std::string& cluster = objects->service_clusters[i];
      if (!credentials.is_null() && !hub_cluster[cluster]) {
        Status copied = SyncCredentialsCopy(member->client(), job, credentials);
        if (!copied.ok()) {
          return Status(copied.code(), "member cluster " + cluster + ": " + copied.message());
        }
      }
      Status s =
          member->client().Create(kube::resources::kServices, ns, objects->services[i]).status();
      if (!s.ok() && !kube::IsAlreadyExists(s)) return s;
      if (kube::IsAlreadyExists(s)) {
        // The Service of an earlier attempt: point it at this one.
        json patch = {{"spec", {{"selector", objects->services[i]["spec"]["selector"]}}},
                      {"metadata", {{"labels", objects->services[i]["metadata"]["labels"]}}}};
        KILN_RETURN_IF_ERROR(member->client()
                                 .Patch(kube::resources::kServices, ns,
                                        Str(objects->services[i]["metadata"], "name"),
                                        kube::PatchType::kMerge, patch.dump())
                                 .status());
      }
    }
  }
  if (!failure && created_before && !credentials.is_null()) {
    // A running gang's copies follow the hub's Secret (the kubelet brings a
    // rotated key into the pods' volumes). A copy that cannot be written
    // does not stop the gang: it is tried again on the next reconcile.
    for (const std::string& cluster : objects->service_clusters) {
      auto member = members_.Get(cluster);
      if (hub_cluster[cluster] || member == nullptr) continue;
      Status copied = SyncCredentialsCopy(member->client(), job, credentials);
      if (!copied.ok()) {
        log::Logger("trainingjob")
            .Warn("cannot update the copy of the S3 credentials in a member cluster",
                  {{"job", request.Key()}, {"cluster", cluster}, {"error", copied.ToString()}});
      }
    }
  }
  // The gates are lifted only once every pod of the attempt exists, so a
  // pod without one says the gang was whole and may be running, whatever
  // the status says yet (the write of Running may not have happened, or been
  // lost with an operator SIGKILLed): a pod missing then is a worker lost,
  // never one to create again into a gang whose other workers have started.
  // (Found by the chaos suite: a worker deleted just after the gates were
  // lifted was created again in the same attempt.)
  bool released = false;
  for (size_t rank = 0; rank < ranks.size(); ++rank) {
    released = released || (seen[rank] && !Gated(pods[rank]));
  }
  if (!failure && (created_before || released)) {
    for (size_t rank = 0; rank < ranks.size(); ++rank) {
      if (seen[rank]) continue;
      // A worker of a started gang is gone without a trace: a failure.
      failure =
          WorkerFailure{.cluster = ranks[rank].cluster,
                        .node = ranks[rank].node,
                        .pod = WorkerPodName(request.name, attempt, static_cast<int32_t>(rank)),
                        .pod_gone = true};
      // Its node's state says why (the pod GC deletes the pods of a deleted
      // node).
      failure->node_health = HealthIn(members_, ranks[rank].cluster, ranks[rank].node);
      break;
    }
  }
  // The missing pods of a new attempt are created, then the gang's
  // scheduling gates lifted, each `create_parallelism` requests at a time.
  // The first error (in rank order) is returned once all have answered.
  std::vector<size_t> todo;
  auto each = [&](const std::function<Status(size_t)>& call) -> Status {
    std::vector<Status> results(todo.size());
    ParallelFor(todo.size(), static_cast<size_t>(std::max(options_.create_parallelism, 1)),
                [&](size_t i) { results[i] = call(todo[i]); });
    for (const Status& s : results) KILN_RETURN_IF_ERROR(s);
    return Status::Ok();
  };
  if (!failure) {
    for (size_t rank = 0; rank < ranks.size(); ++rank) {
      if (!seen[rank]) todo.push_back(rank);
    }
    std::vector<json> made(ranks.size());
    KILN_RETURN_IF_ERROR(each([&](size_t rank) -> Status {
      auto member = members_.Get(ranks[rank].cluster);
      if (member == nullptr) return Status::Ok();
      auto created = member->client().Create(kube::resources::kPods, ns, objects->pods[rank]);
      if (!created.ok())
        return kube::IsAlreadyExists(created.status()) ? Status::Ok() : created.status();
      made[rank] = std::move(*created);
      return Status::Ok();
    }));
    for (size_t rank : todo) {
      if (made[rank].is_null()) continue;
      pods[rank] = std::move(made[rank]);
      seen[rank] = true;
    }
  }
  const bool all_exist = std::all_of(seen.begin(), seen.end(), [](bool b) { return b; });
  if (!failure && all_exist) {
    todo.clear();
    for (size_t rank = 0; rank < ranks.size(); ++rank) {
      if (Gated(pods[rank])) todo.push_back(rank);
    }
    KILN_RETURN_IF_ERROR(each([&](size_t rank) -> Status {
      auto member = members_.Get(ranks[rank].cluster);
      if (member == nullptr) return Status::Ok();
      auto lifted =
          member->client().Patch(kube::resources::kPods, ns, Str(pods[rank]["metadata"], "name"),
                                 kube::PatchType::kMerge, R"({"spec":{"schedulingGates":null}})");
      return lifted.ok() || kube::IsNotFound(lifted.status()) ? Status::Ok() : lifted.status();
    }));
  }

  // 5. The pods' states. A failure the policy ignores does not count: the
  // other workers are still looked at (a real failure among them acts).
  int32_t ready = 0, succeeded = 0, ignored = 0;
  if (!failure) {
    for (size_t rank = 0; rank < ranks.size(); ++rank) {
      if (!seen[rank]) continue;
      const json& pod = pods[rank];
      const std::string pod_phase = pod.value("status", json::object()).value("phase", "");
      if (pod_phase == "Succeeded") {
        ++succeeded;
        continue;
      }
      auto observed = WorkerFailureFromPod(pod, kWorkerContainer);
      if (pod_phase == "Failed" && !observed) {
        // Failed with nothing recorded (no container ever terminated).
        observed = WorkerFailure{.node = pod.value("spec", json::object()).value("nodeName", ""),
                                 .pod = Str(pod["metadata"], "name")};
      }
      const bool exited_badly = pod_phase == "Failed" ||
                                (observed && observed->exit_code && *observed->exit_code != 0) ||
                                (observed && !observed->disruption_reason.empty()) ||
                                (observed && observed->pod_reason == "Evicted");
      if (exited_badly && observed) {
        WorkerFailure f = *observed;
        f.cluster = ranks[rank].cluster;
        if (f.node.empty()) f.node = ranks[rank].node;
        f.node_health = HealthIn(members_, ranks[rank].cluster, f.node);
        const FailureClassification c = Classify(f);
        const FailureDecision d = Decide(c, f.exit_code, job.spec.failure_policy, attempt);
        if (d.action == FailureAction::kIgnore) {
          ++ignored;
          const std::string pod_name = Str(pod["metadata"], "name");
          if (FirstIgnored(request.Key(), pod_name)) {
            record(runtime::EventType::kNormal, "FailureIgnored",
                   pod_name + ": " + std::string(FailureReasonName(c.reason)) + ": " + c.message +
                       " (" + d.why + ")");
          }
          continue;
        }
        failure = f;
        break;
      }
      // A live worker on a node that is gone, NotReady or Unknown: the node
      // has failed under it (Kubernetes itself would wait 300 s to evict).
      const std::string node = pod.value("spec", json::object()).value("nodeName", "");
      if (const NodeHealth health = HealthIn(members_, ranks[rank].cluster, node);
          health != NodeHealth::kReady) {
        failure = WorkerFailure{.cluster = ranks[rank].cluster,
                                .node = node,
                                .pod = Str(pod["metadata"], "name"),
                                .node_health = health};
        break;
      }
      if (pod_phase == "Running" && Ready(pod)) ++ready;
    }
  }
  status.ready_workers = ready;

  if (failure) {
    const FailureClassification c = Classify(*failure);
    const FailureDecision d = Decide(c, failure->exit_code, job.spec.failure_policy, attempt);
    if (d.action != FailureAction::kIgnore) {
      // The attempt is abandoned: its hold goes (its pods count until gone).
      capacity_.Release(request.Key());
      KILN_RETURN_IF_ERROR(DeleteWorkers(obj, attempt).status());
      v1::RestartRecord rec;
      // Milliseconds: the time to recover is measured from it.
      rec.time = FormatRfc3339(options_.now(), 3);
      rec.reason = FailureReasonName(c.reason);
      rec.message = c.message;
      if (!failure->cluster.empty()) rec.cluster = failure->cluster;
      if (!failure->node.empty()) rec.node = failure->node;
      rec.exit_code = failure->exit_code;
      // The worker's own word, else the last progress read (a node or pod
      // that vanished leaves no termination message).
      if (c.last_step) {
        rec.failed_at_step = *c.last_step;
      } else if (status.step) {
        rec.failed_at_step = *status.step;
      }
      // Rank 0, when it has exited, says which checkpoint it wrote last (one
      // on its way out, on SIGTERM, is newer than the last progress read):
      // the next attempt resumes from it.
      if (!seen.empty() && seen[0]) {
        if (auto final_progress = FinalProgress(pods[0], kWorkerContainer);
            final_progress && final_progress->last_checkpoint &&
            (!status.last_checkpoint ||
             final_progress->last_checkpoint->step > status.last_checkpoint->step)) {
          status.last_checkpoint = final_progress->last_checkpoint;
        }
      }
      if (c.resume_before_last_checkpoint) {
        // The newest checkpoint may hold the diverged state: the next
        // attempt deletes it (and any newer) and resumes from the one before,
        // skipping the data through the failed step (worker_pods.h).
        if (status.last_checkpoint) {
          rec.rewind_before_step = status.last_checkpoint->step;
        } else if (rec.failed_at_step) {
          rec.rewind_before_step = rec.failed_at_step;
        }
      } else if (status.last_checkpoint) {
        rec.resumed_from_step = status.last_checkpoint->step;
      }
      if (d.action == FailureAction::kRestart) {
        status.restarts = attempt + 1;
        if (!status.restart_history) status.restart_history.emplace();
        auto& history = *status.restart_history;
        history.push_back(rec);
        if (history.size() > 100) history.erase(history.begin());
        const std::vector<std::string> quarantined =
            Quarantine(request.Key(), status, job.spec.failure_policy);
        status.placement.reset();
        status.phase = "Restarting";
        status.ready_workers = 0;
        SetCondition(status, "Restarting", true, rec.reason, c.message + " (" + d.why + ")", now,
                     generation);
        SetCondition(status, "Running", false, rec.reason, c.message, now, generation);
        KILN_RETURN_IF_ERROR(write());
        record(runtime::EventType::kWarning, "Restarting",
               rec.reason + ": " + c.message + "; restart " + std::to_string(attempt + 1));
        for (const std::string& q : quarantined) {
          record(runtime::EventType::kWarning, "NodeQuarantined",
                 q + ": repeated hardware faults (failurePolicy.nodeQuarantine); tainted " +
                     std::string(placement::kQuarantineTaint) + ":NoSchedule");
        }
        if (options_.metrics != nullptr) {
          options_.metrics->CountRestart(rec.reason);
          for (size_t i = 0; i < quarantined.size(); ++i) options_.metrics->CountQuarantine();
        }
        return runtime::Result{.requeue_after = BacksOff(c.reason)
                                                    ? RestartDelay(job.spec.failure_policy, attempt)
                                                    : milliseconds(1)};
      }
      status.phase = "Failed";
      status.completion_time = now;
      // status.placement stays: where the last attempt ran (and what a
      // lost member may still hold of it when the job is deleted).
      SetCondition(status, "Failed", true, rec.reason, c.message + " (" + d.why + ")", now,
                   generation);
      SetCondition(status, "Running", false, rec.reason, c.message, now, generation);
      KILN_RETURN_IF_ERROR(write());
      record(runtime::EventType::kWarning, "Failed", rec.reason + ": " + c.message);
      return runtime::Result{};
    }
  }

  if (!failure && succeeded + ignored == static_cast<int32_t>(ranks.size())) {
    const std::string finished = ignored == 0 ? "every worker finished"
                                              : std::to_string(succeeded) + " workers finished, " +
                                                    std::to_string(ignored) +
                                                    " ended with an ignored failure";
    status.phase = "Succeeded";
    status.completion_time = now;
    status.ready_workers = 0;
    // Rank 0's own account of the end (its termination message): the final
    // loss, validation loss and checkpoint, not the last progress read (up
    // to an interval old). Every rank ran to the end: all the steps are
    // done, whatever either said.
    if (!seen.empty() && seen[0]) {
      if (auto final_progress = FinalProgress(pods[0], kWorkerContainer)) {
        ApplyProgress(*final_progress, status);
      }
    }
    status.step = job.spec.training.steps;
    SetCondition(status, "Succeeded", true, "Completed", finished, now, generation);
    SetCondition(status, "Running", false, "Completed", "", now, generation);
    KILN_RETURN_IF_ERROR(write());
    record(runtime::EventType::kNormal, "Succeeded", finished);
    Forget(request.Key());
    return runtime::Result{};
  }
  std::optional<std::chrono::system_clock::duration> recovered;
  bool resized = false;
  if (ready == static_cast<int32_t>(ranks.size())) {
    if (status.phase != "Running") status.start_time = status.start_time.value_or(now);
    status.phase = "Running";
    SetCondition(status, "Running", true, "AllWorkersReady",
                 std::to_string(ready) + " workers running", now, generation);
    if (const v1::Condition* r = FindCondition(status, "Restarting"); r && r->status == "True") {
      SetCondition(status, "Restarting", false, "Resumed", "the gang runs again", now, generation);
      // The time to recover: from the failure's detection (the newest
      // restart record) to now.
      if (status.restart_history && !status.restart_history->empty()) {
        auto failed = ParseRfc3339(status.restart_history->back().time);
        if (failed.ok()) {
          recovered = options_.now() -
                      std::chrono::time_point_cast<std::chrono::system_clock::duration>(*failed);
        }
      }
    }
    if (const v1::Condition* r = FindCondition(status, "Resizing"); r && r->status == "True") {
      SetCondition(status, "Resizing", false, "Resized", std::to_string(ready) + " workers running",
                   now, generation);
      resized = true;
    }
  }
  // 8. A running gang and the size asked for (resize.h).
  std::optional<milliseconds> recheck;
  if (!failure && status.phase == "Running") {
    std::optional<std::chrono::system_clock::time_point> running_since;
    if (const v1::Condition* r = FindCondition(status, "Running"); r && r->status == "True") {
      if (auto t = ParseRfc3339(r->last_transition_time); t.ok()) {
        running_since = std::chrono::time_point_cast<std::chrono::system_clock::duration>(*t);
      }
    }
    const ResizeDecision d = PlanResize(request.Key(), job, ranks,
                                        fleet::AttemptHolder(Str(obj["metadata"], "uid"), attempt),
                                        running_since, recheck);
    if (d.to > 0) {
      // Decided first, acted on after: a lost write leaves the gang as it
      // was, and a written one is carried out by the Resizing branch above
      // whatever happens to this operator.
      status.phase = "Resizing";
      SetCondition(status, "Resizing", true, d.reason, d.message, now, generation);
      SetCondition(status, "Running", false, "Resizing", d.message, now, generation);
      KILN_RETURN_IF_ERROR(write());
      record(runtime::EventType::kNormal, "Resizing", d.message);
      capacity_.Release(request.Key());
      KILN_RETURN_IF_ERROR(DeleteWorkers(obj, attempt, kSuspendGraceSeconds).status());
      return runtime::Result{.requeue_after = std::min(options_.resync, kResizePoll)};
    }
    const v1::Condition* r = FindCondition(status, "Resizing");
    if (!d.waiting.empty()) {
      SetCondition(status, "Resizing", false, "WaitingForCapacity", d.waiting, now, generation);
    } else if (r != nullptr && r->reason == "WaitingForCapacity" &&
               static_cast<int32_t>(ranks.size()) == job.spec.workers.replicas) {
      SetCondition(status, "Resizing", false, "Resized",
                   std::to_string(ranks.size()) + " workers running, the size asked for", now,
                   generation);
    }
  }
  if (!failure && status.phase == "Running") {
    // 7. Progress, from rank 0.
    RefreshProgress(request.Key(), ns, ranks[0], WorkerPodName(request.name, attempt, 0),
                    pod_options.metrics_port, status);
    if (options_.metrics != nullptr && status.step) {
      options_.metrics->SetProgress(request.ns, request.name, *status.step,
                                    status.tokens_per_second, status.loss);
    }
  }
  KILN_RETURN_IF_ERROR(write());
  if (recovered) {
    const double took = std::chrono::duration<double>(*recovered).count();
    if (options_.metrics != nullptr) options_.metrics->ObserveRecovery(*recovered);
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f", took);
    record(runtime::EventType::kNormal, "Recovered",
           "the whole gang runs again, attempt " + std::to_string(attempt) + ", " + seconds +
               " s after the failure was detected");
  }
  if (resized) {
    record(runtime::EventType::kNormal, "Resized",
           "the gang runs again with " + std::to_string(ranks.size()) + " workers");
  }
  // A rotated credentials Secret reaches the copies at the next look; a
  // gang below its size looks for room at the next growth check.
  milliseconds next =
      s3 ? std::min(options_.resync, options_.unschedulable_retry) : options_.resync;
  if (recheck) next = std::min(next, *recheck);
  return runtime::Result{.requeue_after = next};
}

}  // namespace kiln::trainingjob
