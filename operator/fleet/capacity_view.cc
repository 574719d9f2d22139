#include "operator/fleet/capacity_view.h"

#include "kube/store.h"
#include "operator/fleet/node_and_pod.h"
#include "operator/placement/well_known.h"

namespace kiln::fleet {

using nlohmann::json;

void CapacityView::UpsertCluster(placement::ClusterInfo info) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.try_emplace(info.name);
  snapshot_.UpsertCluster(std::move(info));
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
  std::lock_guard<std::mutex> lock(mu_);
  ++events_;
  auto pending = pending_.find(cluster);
  if (pending == pending_.end()) return;  // Unknown cluster.
  if (node.empty()) {
    if (requests->gpus > 0) pending->second[key] = Pending{requests->gpus};
    return;
  }
  pending->second.erase(key);
  if (Status s = snapshot_.AddPod(cluster, node, key, *requests); !s.ok()) {
    log_.Debug("pod event of an unknown cluster", {{"cluster", cluster}});
  }
}

void CapacityView::OnPodDeleted(const std::string& cluster, const json& pod) {
  const std::string key = kube::Store::KeyOf(pod);
  std::lock_guard<std::mutex> lock(mu_);
  ++events_;
  if (auto pending = pending_.find(cluster); pending != pending_.end()) {
    pending->second.erase(key);
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
