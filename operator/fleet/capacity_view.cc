#include "operator/fleet/capacity_view.h"

#include "kube/store.h"
#include "operator/fleet/node_and_pod.h"
#include "operator/placement/well_known.h"

namespace kiln::fleet {

using nlohmann::json;

namespace {

// How often PlaceAndHold places on a copy before it places under the lock.
constexpr int kOptimisticTries = 3;

}  // namespace

void CapacityView::UpsertCluster(placement::ClusterInfo info) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string name = info.name;
  const bool known = snapshot_.cluster(name) != nullptr;
  pending_.try_emplace(name);
  snapshot_.UpsertCluster(std::move(info));
  if (known) return;
  // A cluster (re)connected: the holds on it count again.
  for (const auto& [job, hold] : holds_) {
    for (const auto& [rank, worker] : hold.ranks) {
      if (worker.cluster == name) ApplyHold(hold.holder, rank, worker);
    }
  }
}

void CapacityView::RemoveCluster(const std::string& cluster) {
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_.RemoveCluster(cluster);
  pending_.erase(cluster);
}

void CapacityView::OnNode(const std::string& cluster, const json& node) {
  auto info = NodeInfoFromObject(node);
  if (!info.ok()) {
    log_.Warn("node dropped", {{"cluster", cluster}, {"error", info.status().ToString()}});
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++events_;
  if (Status s = snapshot_.UpsertNode(cluster, std::move(*info)); !s.ok()) {
    log_.Debug("node event of an unknown cluster", {{"cluster", cluster}});
  }
}

void CapacityView::OnNodeDeleted(const std::string& cluster, const json& node) {
  std::string name = node["metadata"].value("name", "");
  std::lock_guard<std::mutex> lock(mu_);
  ++events_;
  // Ok when absent; an unknown cluster has nothing to remove.
  (void)snapshot_.RemoveNode(cluster, name);
}

void CapacityView::OnPod(const std::string& cluster, const json& pod) {
  const std::string key = kube::Store::KeyOf(pod);
  if (PodTerminated(pod)) {
    OnPodDeleted(cluster, pod);
    return;
  }
  auto requests = PodRequests(pod);
  if (!requests.ok()) {
    log_.Warn("pod dropped",
              {{"cluster", cluster}, {"pod", key}, {"error", requests.status().ToString()}});
    return;
  }
  std::string node = pod.value("spec", json::object()).value("nodeName", "");
  const std::optional<WorkerRef> worker = WorkerOfPod(pod);
  std::lock_guard<std::mutex> lock(mu_);
  ++events_;
  auto pending = pending_.find(cluster);
  if (pending == pending_.end()) return;  // Unknown cluster.
  if (node.empty()) {
    // Not bound yet: a worker's hold, if any, stands for it.
    if (requests->gpus > 0) pending->second[key] = Pending{requests->gpus};
    return;
  }
  pending->second.erase(key);
  if (worker) {
    OnWorkerPod(cluster, *worker, node, *requests, key);
    return;
  }
  if (Status s = snapshot_.AddPod(cluster, node, key, *requests); !s.ok()) {
    log_.Debug("pod event of an unknown cluster", {{"cluster", cluster}});
  }
}

void CapacityView::OnWorkerPod(const std::string& cluster, const WorkerRef& worker,
                               const std::string& node, const placement::Resources& requests,
                               const std::string& pod_key) {
  // The bound pod replaces its rank's hold (same key), which is then spent:
  // when the pod ends, nothing of it is held any more.
  if (auto job = job_of_holder_.find(worker.holder); job != job_of_holder_.end()) {
    auto& ranks = holds_[job->second].ranks;
    if (auto held = ranks.find(worker.rank); held != ranks.end()) {
      if (held->second.cluster != cluster) DropHold(worker.holder, worker.rank, held->second);
      if (held->second.node != node) {
        log_.Warn("a worker pod is bound to another node than its placement's",
                  {{"cluster", cluster},
                   {"pod", pod_key},
                   {"placed", held->second.node},
                   {"bound", node}});
      }
      ranks.erase(held);
    }
  }
  if (Status s = snapshot_.AddPod(cluster, node,
                                  placement::WorkerPodKey(worker.holder, worker.rank), requests);
      !s.ok()) {
    log_.Debug("pod event of an unknown cluster", {{"cluster", cluster}});
  }
}

void CapacityView::OnPodDeleted(const std::string& cluster, const json& pod) {
  const std::string key = kube::Store::KeyOf(pod);
  const std::optional<WorkerRef> worker = WorkerOfPod(pod);
  std::lock_guard<std::mutex> lock(mu_);
  ++events_;
  if (auto pending = pending_.find(cluster); pending != pending_.end()) {
    pending->second.erase(key);
  }
  if (worker) {
    // A worker deleted before it was bound never replaced its hold: the
    // hold stands until the job releases it.
    const WorkerHold* held = FindHold(worker->holder, worker->rank);
    if (held != nullptr && held->cluster == cluster) return;
    // Ok when absent: deletes are idempotent.
    (void)snapshot_.RemovePod(cluster, placement::WorkerPodKey(worker->holder, worker->rank));
    return;
  }
  // Ok when absent: deletes are idempotent.
  (void)snapshot_.RemovePod(cluster, key);
}

kube::EventHandlers CapacityView::NodeHandlers(const std::string& cluster) {
  return {
      .on_add = [this, cluster](const kube::Object& o) { OnNode(cluster, *o); },
      .on_update = [this, cluster](const kube::Object&,
                                   const kube::Object& now) { OnNode(cluster, *now); },
      .on_delete = [this, cluster](const kube::Object& o) { OnNodeDeleted(cluster, *o); },
  };
}

kube::EventHandlers CapacityView::PodHandlers(const std::string& cluster) {
  return {
      .on_add = [this, cluster](const kube::Object& o) { OnPod(cluster, *o); },
      .on_update = [this, cluster](const kube::Object&,
                                   const kube::Object& now) { OnPod(cluster, *now); },
      .on_delete = [this, cluster](const kube::Object& o) { OnPodDeleted(cluster, *o); },
  };
}

StatusOr<placement::Placement> CapacityView::PlaceAndHold(const placement::Gang& gang,
                                                          const std::string& holder) {
  {
    // What the job held before (an earlier decision) is not in its way.
    std::lock_guard<std::mutex> lock(mu_);
    ReleaseLocked(gang.name);
  }
  auto hold = [&](const placement::Placement& placed) {
    JobHold& h = holds_[gang.name];
    h.holder = holder;
    for (size_t rank = 0; rank < placed.workers.size(); ++rank) {
      h.ranks[static_cast<int32_t>(rank)] = {placed.workers[rank].cluster,
                                             placed.workers[rank].node, placed.per_worker};
    }
    job_of_holder_[holder] = gang.name;
  };
  for (int attempt = 0; attempt < kOptimisticTries; ++attempt) {
    const placement::Snapshot copy = Snapshot();
    StatusOr<placement::Placement> placed = placement::Place(gang, copy);
    if (!placed.ok()) return placed;
    std::lock_guard<std::mutex> lock(mu_);
    ReleaseLocked(gang.name);
    // Reserve checks every node's room again on the master: a decision that
    // another overtook holds nothing and is made again.
    Status reserved = placement::Reserve(*placed, holder, snapshot_);
    if (reserved.ok()) {
      hold(*placed);
      return placed;
    }
    if (reserved.code() != StatusCode::kAborted && reserved.code() != StatusCode::kNotFound) {
      return reserved;
    }
    log_.Debug("placement overtaken; placing again",
               {{"gang", gang.name}, {"why", reserved.message()}});
  }
  // Overtaken every time: place under the lock (a few milliseconds at most,
  // no I/O), which nothing can overtake.
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseLocked(gang.name);
  StatusOr<placement::Placement> placed = placement::Place(gang, snapshot_);
  if (!placed.ok()) return placed;
  KILN_RETURN_IF_ERROR(placement::Reserve(*placed, holder, snapshot_));
  hold(*placed);
  return placed;
}

void CapacityView::Hold(const std::string& job, const std::string& holder,
                        const std::vector<WorkerHold>& ranks) {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseLocked(job);
  JobHold h{holder, {}};
  for (size_t i = 0; i < ranks.size(); ++i) {
    const WorkerHold& worker = ranks[i];
    if (worker.node.empty()) continue;
    const auto rank = static_cast<int32_t>(i);
    // The job's own holds are gone: whatever the key still names is its
    // bound pod, which counts for it.
    if (snapshot_.PodNode(worker.cluster, placement::WorkerPodKey(holder, rank)) != nullptr) {
      continue;
    }
    ApplyHold(holder, rank, worker);
    h.ranks.emplace(rank, worker);
  }
  holds_[job] = std::move(h);
  job_of_holder_[holder] = job;
}

void CapacityView::Release(const std::string& job) {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseLocked(job);
}

std::vector<int32_t> CapacityView::HeldRanks(const std::string& job) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int32_t> ranks;
  if (auto it = holds_.find(job); it != holds_.end()) {
    for (const auto& [rank, worker] : it->second.ranks) ranks.push_back(rank);
  }
  return ranks;
}

void CapacityView::ApplyHold(const std::string& holder, int32_t rank, const WorkerHold& hold) {
  // NotFound for a cluster not in the view now: UpsertCluster applies it
  // when the cluster comes (back).
  (void)snapshot_.AddPod(hold.cluster, hold.node, placement::WorkerPodKey(holder, rank),
                         hold.resources);
}

void CapacityView::DropHold(const std::string& holder, int32_t rank, const WorkerHold& hold) {
  // Ok when absent (its cluster is gone from the view).
  (void)snapshot_.RemovePod(hold.cluster, placement::WorkerPodKey(holder, rank));
}

void CapacityView::ReleaseLocked(const std::string& job) {
  auto it = holds_.find(job);
  if (it == holds_.end()) return;
  for (const auto& [rank, worker] : it->second.ranks) DropHold(it->second.holder, rank, worker);
  job_of_holder_.erase(it->second.holder);
  holds_.erase(it);
}

const WorkerHold* CapacityView::FindHold(const std::string& holder, int32_t rank) const {
  auto job = job_of_holder_.find(holder);
  if (job == job_of_holder_.end()) return nullptr;
  auto hold = holds_.find(job->second);
  if (hold == holds_.end()) return nullptr;
  auto worker = hold->second.ranks.find(rank);
  return worker == hold->second.ranks.end() ? nullptr : &worker->second;
}

placement::Snapshot CapacityView::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

ClusterCapacity CapacityView::Capacity(const std::string& cluster) const {
  ClusterCapacity out;
  // Copy under the lock (cheap), aggregate outside it.
  placement::Snapshot copy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    copy = snapshot_;
    if (auto it = pending_.find(cluster); it != pending_.end()) {
      for (const auto& [key, p] : it->second) {
        ++out.pending_pods;
        out.pending_gpus += p.gpus;
      }
    }
  }
  const placement::Snapshot::Cluster* c = copy.cluster(cluster);
  if (c == nullptr) return out;
  for (const auto& [name, slot] : c->nodes()) {
    const placement::NodeInfo& node = c->node(slot);
    ++out.node_count;
    if (node.schedulable) ++out.schedulable_nodes;
    if (node.quarantined) ++out.quarantined_nodes;
  }
  out.total = copy.ClusterCapacity(cluster);
  out.by_product = copy.CapacityBy(cluster, placement::kGpuProductLabel);
  out.by_zone = copy.CapacityBy(cluster, placement::kZoneLabel);
  out.by_rack = copy.CapacityBy(cluster, placement::kRackLabel);
  out.by_nvlink_domain = copy.CapacityBy(cluster, placement::kNvlinkDomainLabel);
  return out;
}

int64_t CapacityView::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

}  // namespace kiln::fleet
