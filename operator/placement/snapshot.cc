#include "operator/placement/snapshot.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "operator/placement/well_known.h"

// ThreadSanitizer's builds: GCC says so by __SANITIZE_THREAD__, clang by
// __has_feature.
#if defined(__SANITIZE_THREAD__)
#define KILN_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KILN_THREAD_SANITIZER 1
#endif
#endif
#ifndef KILN_THREAD_SANITIZER
#define KILN_THREAD_SANITIZER 0
#endif

namespace kiln::placement {

namespace {

// Whether a node's taints keep some gangs off it.
bool HasBlockingTaint(const NodeInfo& node) {
  for (const auto& t : node.taints) {
    if (t.effect != "PreferNoSchedule" || t.key == kQuarantineTaint) return true;
  }
  return false;
}

const std::string& EmptyString() {
  static const std::string empty;
  return empty;
}

}  // namespace

const std::string& NodeInfo::Label(std::string_view key) const {
  auto it = labels.find(key);
  return it == labels.end() ? EmptyString() : it->second;
}

int Snapshot::Cluster::KeyIndex(std::string_view key) const {
  for (size_t i = 0; i < keys_->size(); ++i) {
    if ((*keys_)[i] == key) return static_cast<int>(i);
  }
  return -1;
}

std::optional<size_t> Snapshot::Cluster::FindDomain(size_t key_index,
                                                    std::string_view value) const {
  auto it = topology_->domain_ids[key_index].find(value);
  if (it == topology_->domain_ids[key_index].end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Snapshot::DefaultIndexedKeys() {
  return {kNvlinkDomainLabel, kRackLabel, kZoneLabel};
}

Snapshot::Snapshot(std::vector<std::string> indexed_keys)
    : indexed_keys_(std::make_shared<const std::vector<std::string>>(std::move(indexed_keys))) {}

void Snapshot::UpsertCluster(ClusterInfo info) {
  auto it = clusters_.find(info.name);
  if (it != clusters_.end()) {
    it->second.info_ = std::move(info);
    return;
  }
  const size_t keys = indexed_keys_->size();
  Cluster c;
  c.keys_ = indexed_keys_;
  c.topology_ = std::make_shared<Cluster::Topology>();
  c.topology_->domains.resize(keys);
  c.topology_->slot_domain.resize(keys);
  c.topology_->domain_ids.resize(keys);
  c.topology_->domain_order.resize(keys);
  c.usage_ = std::make_shared<Cluster::Usage>();
  c.usage_->domain_free.resize(keys);
  c.reservations_ = std::make_shared<Cluster::Reservations>();
  for (auto& shard : c.reservations_->shards) shard = std::make_shared<Cluster::ReservationShard>();
  std::string name = info.name;
  c.info_ = std::move(info);
  clusters_.emplace(std::move(name), std::move(c));
}

void Snapshot::RemoveCluster(std::string_view cluster) {
  auto it = clusters_.find(cluster);
  if (it != clusters_.end()) clusters_.erase(it);
}

const Snapshot::Cluster* Snapshot::cluster(std::string_view name) const {
  auto it = clusters_.find(name);
  return it == clusters_.end() ? nullptr : &it->second;
}

Snapshot::Cluster* Snapshot::MutableCluster(std::string_view name) {
  auto it = clusters_.find(name);
  return it == clusters_.end() ? nullptr : &it->second;
}

namespace {

// Copy-on-write's ownership check: whether `p` is the only owner of its part,
// so that it may be changed in place. use_count() can only overstate sharing
// here (another thread may be dropping its copy), which costs a needless
// clone, never a shared write: no new sharer can appear while this copy is
// being changed. But use_count() is a relaxed load: a thread that read the
// part and then dropped the last other copy (outside CapacityView's lock)
// must be ordered before the change in place. Its drop is a release
// (shared_ptr's count decrement is acq_rel); an acquire fence after reading
// the count it wrote completes the synchronisation ([atomics.fences]). The
// fence is free on x86 (it only stops the compiler). ThreadSanitizer does not
// model fences, so its builds take an acquire read-modify-write on the count
// instead (weak_ptr::lock), which it sees; that costs 15-55% of
// placement_bench's throughput, too much for the real build.
template <typename T>
bool SoleOwner(const std::shared_ptr<T>& p) {
  if (p.use_count() != 1) return false;
#if KILN_THREAD_SANITIZER
  return std::weak_ptr<T>(p).lock().use_count() == 2;  // p and the locked copy.
#else
  std::atomic_thread_fence(std::memory_order_acquire);
  return true;
#endif
}

}  // namespace

// Copy-on-write: a part shared with another Snapshot copy is cloned before the
// first change (SoleOwner).
Snapshot::Cluster::Topology& Snapshot::MutableTopology(Cluster& c) {
  if (!SoleOwner(c.topology_)) c.topology_ = std::make_shared<Cluster::Topology>(*c.topology_);
  return *c.topology_;
}

Snapshot::Cluster::Usage& Snapshot::MutableUsage(Cluster& c) {
  if (!SoleOwner(c.usage_)) c.usage_ = std::make_shared<Cluster::Usage>(*c.usage_);
  return *c.usage_;
}

Snapshot::Cluster::Reservations& Snapshot::MutableReservations(Cluster& c) {
  if (!SoleOwner(c.reservations_)) {
    c.reservations_ = std::make_shared<Cluster::Reservations>(*c.reservations_);
  }
  return *c.reservations_;
}

size_t Snapshot::ShardOf(std::string_view key) {
  return std::hash<std::string_view>{}(key) % Cluster::kReservationShards;
}

const Snapshot::Cluster::Reservation* Snapshot::FindPod(const Cluster& c, std::string_view key) {
  const auto& shard = *c.reservations_->shards[ShardOf(key)];
  auto it = shard.find(std::string(key));
  return it == shard.end() ? nullptr : &it->second;
}

Snapshot::Cluster::ReservationShard& Snapshot::MutableShard(Cluster& c, std::string_view key) {
  auto& shard = MutableReservations(c).shards[ShardOf(key)];
  if (!SoleOwner(shard)) shard = std::make_shared<Cluster::ReservationShard>(*shard);
  return *shard;
}

void Snapshot::AccountFree(Cluster& c, size_t slot, int sign) {
  const NodeInfo& node = *c.topology_->slots[slot];
  if (!node.TakesWork()) return;
  Cluster::Usage& usage = MutableUsage(c);
  const int64_t gpus = sign * FreeOf(node.allocatable, usage.used[slot]).gpus;
  usage.free_gpus += gpus;
  for (size_t k = 0; k < usage.domain_free.size(); ++k) {
    const size_t id = c.topology_->slot_domain[k][slot];
    if (id != Cluster::kNoDomain) usage.domain_free[k][id] += gpus;
  }
}

void Snapshot::AttachToDomains(Cluster& c, size_t slot) {
  Cluster::Topology& topo = MutableTopology(c);
  const NodeInfo& node = *topo.slots[slot];
  for (size_t k = 0; k < c.keys_->size(); ++k) {
    const std::string& value = node.Label((*c.keys_)[k]);
    auto found = topo.domain_ids[k].find(value);
    size_t id;
    if (found != topo.domain_ids[k].end()) {
      id = found->second;
    } else {
      id = topo.domains[k].size();
      topo.domains[k].push_back(Domain{value, {}});
      topo.domain_ids[k].emplace(value, id);
      auto& order = topo.domain_order[k];
      order.insert(std::lower_bound(order.begin(), order.end(), value,
                                    [&](size_t a, const std::string& v) {
                                      return topo.domains[k][a].value < v;
                                    }),
                   id);
      MutableUsage(c).domain_free[k].resize(topo.domains[k].size(), 0);
    }
    topo.domains[k][id].nodes.emplace(node.name, slot);
    topo.slot_domain[k][slot] = id;
  }
}

void Snapshot::DetachFromDomains(Cluster& c, size_t slot) {
  Cluster::Topology& topo = MutableTopology(c);
  const NodeInfo& node = *topo.slots[slot];
  for (size_t k = 0; k < c.keys_->size(); ++k) {
    const size_t id = topo.slot_domain[k][slot];
    if (id == Cluster::kNoDomain) continue;
    Domain& domain = topo.domains[k][id];
    domain.nodes.erase(node.name);
    if (domain.nodes.empty()) {
      // The id is retired, not reused (its usage entry stays 0); the value
      // gets a new id if nodes come back to it.
      topo.domain_ids[k].erase(domain.value);
      auto& order = topo.domain_order[k];
      order.erase(std::find(order.begin(), order.end(), id));
    }
    topo.slot_domain[k][slot] = Cluster::kNoDomain;
  }
}

void Snapshot::SetSlot(Cluster::Topology& topo, size_t slot, NodeInfo node) {
  topo.state[slot] =
      node.TakesWork() && !HasBlockingTaint(node) ? Cluster::kOpen : Cluster::kRestricted;
  topo.allocatable[slot] = node.allocatable;
  topo.slots[slot] = std::make_shared<const NodeInfo>(std::move(node));
  topo.gpu_product[slot] = topo.slots[slot]->Label(kGpuProductLabel);
}

Status Snapshot::UpsertNode(std::string_view cluster, NodeInfo node) {
  Cluster* c = MutableCluster(cluster);
  if (c == nullptr) return Status::NotFound("cluster " + std::string(cluster) + " is unknown");
  auto existing = c->topology_->by_name.find(node.name);
  if (existing != c->topology_->by_name.end()) {
    const size_t slot = existing->second;
    if (*c->topology_->slots[slot] == node) return Status::Ok();
    AccountFree(*c, slot, -1);
    DetachFromDomains(*c, slot);
    SetSlot(MutableTopology(*c), slot, std::move(node));
    AttachToDomains(*c, slot);
    AccountFree(*c, slot, +1);
    return Status::Ok();
  }

  Cluster::Topology& topo = MutableTopology(*c);
  Cluster::Usage& usage = MutableUsage(*c);
  size_t slot;
  if (!topo.free_slots.empty()) {
    slot = topo.free_slots.back();
    topo.free_slots.pop_back();
  } else {
    slot = topo.slots.size();
    topo.slots.emplace_back();
    topo.state.push_back(Cluster::kEmpty);
    topo.allocatable.emplace_back();
    topo.gpu_product.emplace_back();
    for (auto& per_key : topo.slot_domain) per_key.push_back(Cluster::kNoDomain);
    usage.used.emplace_back();
    usage.pods.push_back(0);
  }
  const std::string name = node.name;
  SetSlot(topo, slot, std::move(node));
  topo.by_name.emplace(name, slot);
  usage.used[slot] = {};
  usage.pods[slot] = 0;

  // Pods seen before their node: take them over (rare, so a scan is fine).
  auto orphans = c->reservations_->orphans.find(name);
  if (orphans != c->reservations_->orphans.end()) {
    for (const auto& shard : c->reservations_->shards) {
      for (const auto& [key, reservation] : *shard) {
        if (reservation.node != name) continue;
        usage.used[slot] += reservation.resources;
        ++usage.pods[slot];
      }
    }
    MutableReservations(*c).orphans.erase(name);
  }
  AttachToDomains(*c, slot);
  AccountFree(*c, slot, +1);
  return Status::Ok();
}

Status Snapshot::RemoveNode(std::string_view cluster, std::string_view node) {
  Cluster* c = MutableCluster(cluster);
  if (c == nullptr) return Status::NotFound("cluster " + std::string(cluster) + " is unknown");
  auto existing = c->topology_->by_name.find(node);
  if (existing == c->topology_->by_name.end()) return Status::Ok();
  const size_t slot = existing->second;
  AccountFree(*c, slot, -1);
  DetachFromDomains(*c, slot);
  Cluster::Topology& topo = MutableTopology(*c);
  Cluster::Usage& usage = MutableUsage(*c);
  if (usage.pods[slot] > 0) {
    MutableReservations(*c).orphans[std::string(node)] += usage.pods[slot];
  }
  usage.used[slot] = {};
  usage.pods[slot] = 0;
  topo.by_name.erase(topo.by_name.find(node));
  topo.slots[slot] = nullptr;
  topo.state[slot] = Cluster::kEmpty;
  topo.allocatable[slot] = {};
  topo.gpu_product[slot] = {};
  topo.free_slots.push_back(slot);
  return Status::Ok();
}

void Snapshot::Hold(Cluster& c, const std::string& node, const Resources& r, int sign) {
  auto existing = c.topology_->by_name.find(node);
  if (existing == c.topology_->by_name.end()) {
    Cluster::Reservations& reservations = MutableReservations(c);
    if ((reservations.orphans[node] += sign) <= 0) reservations.orphans.erase(node);
    return;
  }
  const size_t slot = existing->second;
  AccountFree(c, slot, -1);
  Cluster::Usage& usage = MutableUsage(c);
  if (sign > 0) {
    usage.used[slot] += r;
  } else {
    usage.used[slot] -= r;
  }
  usage.pods[slot] += sign;
  AccountFree(c, slot, +1);
}

Status Snapshot::AddPod(std::string_view cluster, std::string_view node, std::string key,
                        const Resources& resources) {
  Cluster* c = MutableCluster(cluster);
  if (c == nullptr) return Status::NotFound("cluster " + std::string(cluster) + " is unknown");
  if (const Cluster::Reservation* existing = FindPod(*c, key)) {
    if (existing->node == node && existing->resources == resources) return Status::Ok();
    Cluster::Reservation old = *existing;
    Hold(*c, old.node, old.resources, -1);
    Hold(*c, std::string(node), resources, +1);
    MutableShard(*c, key)[key] = {std::string(node), resources};
    return Status::Ok();
  }
  Hold(*c, std::string(node), resources, +1);
  MutableShard(*c, key).emplace(key, Cluster::Reservation{std::string(node), resources});
  ++MutableReservations(*c).count;
  return Status::Ok();
}

Status Snapshot::RemovePod(std::string_view cluster, std::string_view key) {
  Cluster* c = MutableCluster(cluster);
  if (c == nullptr) return Status::Ok();
  const Cluster::Reservation* existing = FindPod(*c, key);
  if (existing == nullptr) return Status::Ok();
  Cluster::Reservation old = *existing;
  Hold(*c, old.node, old.resources, -1);
  MutableShard(*c, key).erase(std::string(key));
  --MutableReservations(*c).count;
  return Status::Ok();
}

const std::string* Snapshot::PodNode(std::string_view cluster, std::string_view key) const {
  const Cluster* c = this->cluster(cluster);
  if (c == nullptr) return nullptr;
  const Cluster::Reservation* pod = FindPod(*c, key);
  return pod == nullptr ? nullptr : &pod->node;
}

StatusOr<Resources> Snapshot::Free(std::string_view cluster, std::string_view node) const {
  const Cluster* c = this->cluster(cluster);
  if (c == nullptr) return Status::NotFound("cluster " + std::string(cluster) + " is unknown");
  auto it = c->nodes().find(node);
  if (it == c->nodes().end()) {
    return Status::NotFound("node " + std::string(cluster) + "/" + std::string(node) +
                            " is unknown");
  }
  return c->free(it->second);
}

namespace {

void Count(Capacity& capacity, const NodeInfo& node, const Resources& free) {
  if (node.quarantined) {
    ++capacity.quarantined;
  } else if (!node.schedulable) {
    ++capacity.unschedulable;
  } else {
    ++capacity.nodes;
    capacity.gpus += node.allocatable.gpus;
    capacity.free_gpus += free.gpus;
  }
}

}  // namespace

Capacity Snapshot::ClusterCapacity(std::string_view cluster) const {
  Capacity capacity;
  const Cluster* c = this->cluster(cluster);
  if (c == nullptr) return capacity;
  for (const auto& [name, slot] : c->nodes()) Count(capacity, c->node(slot), c->free(slot));
  return capacity;
}

std::map<std::string, Capacity> Snapshot::CapacityBy(std::string_view cluster,
                                                     std::string_view label) const {
  std::map<std::string, Capacity> by;
  const Cluster* c = this->cluster(cluster);
  if (c == nullptr) return by;
  for (const auto& [name, slot] : c->nodes()) {
    const NodeInfo& node = c->node(slot);
    Count(by[node.Label(label)], node, c->free(slot));
  }
  return by;
}

}  // namespace kiln::placement
