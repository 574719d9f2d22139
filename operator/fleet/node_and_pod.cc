#include "operator/fleet/node_and_pod.h"

#include <algorithm>
#include <charconv>
#include <initializer_list>

#include "operator/placement/trainingjob_gang.h"
#include "operator/placement/well_known.h"

namespace kiln::fleet {
namespace {

using nlohmann::json;

const json& Field(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// Reads cpu (millicores), memory (bytes) and nvidia.com/gpu from a resource
// list (allocatable, requests or limits).
StatusOr<placement::Resources> ResourcesOf(const json& list) {
  placement::Resources r;
  if (!list.is_object()) return r;
  if (list.contains("cpu")) {
    KILN_ASSIGN_OR_RETURN(r.cpu_millis, placement::ParseMilliQuantity(list["cpu"]));
  }
  if (list.contains("memory")) {
    KILN_ASSIGN_OR_RETURN(int64_t milli, placement::ParseMilliQuantity(list["memory"]));
    r.memory_bytes = (milli + 999) / 1000;
  }
  if (list.contains(kGpuResource)) {
    KILN_ASSIGN_OR_RETURN(int64_t milli, placement::ParseMilliQuantity(list[kGpuResource]));
    r.gpus = (milli + 999) / 1000;
  }
  return r;
}

// requests, with limits standing in for absent requests.
StatusOr<placement::Resources> ContainerRequests(const json& container) {
  const json& resources = Field(container, "resources");
  KILN_ASSIGN_OR_RETURN(placement::Resources requests, ResourcesOf(Field(resources, "requests")));
  KILN_ASSIGN_OR_RETURN(placement::Resources limits, ResourcesOf(Field(resources, "limits")));
  const json& req = Field(resources, "requests");
  auto has = [&](const char* key) { return req.is_object() && req.contains(key); };
  if (!has("cpu")) requests.cpu_millis = limits.cpu_millis;
  if (!has("memory")) requests.memory_bytes = limits.memory_bytes;
  if (!has(kGpuResource)) requests.gpus = limits.gpus;
  return requests;
}

// A label value that is a whole, non-negative number (the attempt, the rank).
std::optional<int32_t> CountLabel(const json& labels, const char* key) {
  const json& v = Field(labels, key);
  if (!v.is_string()) return std::nullopt;
  const std::string& text = v.get_ref<const std::string&>();
  int32_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || n < 0) {
    return std::nullopt;
  }
  return n;
}

placement::Resources Max(const placement::Resources& a, const placement::Resources& b) {
  return {std::max(a.gpus, b.gpus), std::max(a.cpu_millis, b.cpu_millis),
          std::max(a.memory_bytes, b.memory_bytes)};
}

}  // namespace

StatusOr<placement::NodeInfo> NodeInfoFromObject(const json& node) {
  placement::NodeInfo info;
  const json& metadata = Field(node, "metadata");
  info.name = Field(metadata, "name").is_string() ? Field(metadata, "name").get<std::string>() : "";
  if (const json& labels = Field(metadata, "labels"); labels.is_object()) {
    for (const auto& [k, v] : labels.items()) {
      if (v.is_string()) info.labels.emplace(k, v.get<std::string>());
    }
  }
  const json& spec = Field(node, "spec");
  if (const json& taints = Field(spec, "taints"); taints.is_array()) {
    for (const json& t : taints) {
      placement::Taint taint{t.value("key", ""), t.value("value", ""), t.value("effect", "")};
      if (taint.key == placement::kQuarantineTaint) info.quarantined = true;
      info.taints.push_back(std::move(taint));
    }
  }
  const json& status = Field(node, "status");
  auto allocatable = ResourcesOf(Field(status, "allocatable"));
  if (!allocatable.ok()) {
    return Status::InvalidArgument("node " + info.name +
                                   " status.allocatable: " + allocatable.status().message());
  }
  info.allocatable = *allocatable;
  const json& unschedulable = Field(spec, "unschedulable");
  info.schedulable =
      NodeReadyStatus(node) == "True" && !(unschedulable.is_boolean() && unschedulable.get<bool>());
  return info;
}

std::string NodeReadyStatus(const json& node) {
  if (const json& conditions = Field(Field(node, "status"), "conditions"); conditions.is_array()) {
    for (const json& c : conditions) {
      if (c.is_object() && c.value("type", "") == "Ready") return c.value("status", "");
    }
  }
  return "";
}

StatusOr<placement::Resources> PodRequests(const json& pod) {
  const json& spec = Field(pod, "spec");
  placement::Resources sum;
  if (const json& containers = Field(spec, "containers"); containers.is_array()) {
    for (const json& c : containers) {
      KILN_ASSIGN_OR_RETURN(placement::Resources r, ContainerRequests(c));
      sum += r;
    }
  }
  if (const json& inits = Field(spec, "initContainers"); inits.is_array()) {
    for (const json& c : inits) {
      KILN_ASSIGN_OR_RETURN(placement::Resources r, ContainerRequests(c));
      sum = Max(sum, r);
    }
  }
  return sum;
}

bool PodTerminated(const json& pod) {
  const json& phase = Field(Field(pod, "status"), "phase");
  return phase.is_string() && (phase == "Succeeded" || phase == "Failed");
}

namespace {

// `from`'s members named in `keys` (those it has), moved out of it.
json Keep(json& from, std::initializer_list<const char*> keys) {
  json out = json::object();
  if (!from.is_object()) return out;
  for (const char* k : keys) {
    auto it = from.find(k);
    if (it != from.end()) out[k] = std::move(*it);
  }
  return out;
}

// `object`'s apiVersion, kind and identifying metadata (with its labels).
json KeepIdentity(json& object) {
  json out = Keep(object, {"apiVersion", "kind"});
  auto meta = object.find("metadata");
  out["metadata"] = meta == object.end()
                        ? json::object()
                        : Keep(*meta, {"name", "namespace", "uid", "resourceVersion", "generation",
                                       "labels", "creationTimestamp", "deletionTimestamp"});
  return out;
}

// Containers' names, resources and (for sidecars) restart policy.
json KeepContainers(json& containers) {
  json out = json::array();
  if (!containers.is_array()) return out;
  for (json& c : containers) out.push_back(Keep(c, {"name", "resources", "restartPolicy"}));
  return out;
}

}  // namespace

json NodeAsWatched(json node) {
  json out = KeepIdentity(node);
  if (auto spec = node.find("spec"); spec != node.end()) {
    out["spec"] = Keep(*spec, {"taints", "unschedulable"});
  }
  if (auto status = node.find("status"); status != node.end()) {
    json kept = Keep(*status, {"allocatable", "capacity", "conditions"});
    if (auto conditions = kept.find("conditions");
        conditions != kept.end() && conditions->is_array()) {
      for (json& c : *conditions) {
        if (c.is_object()) c.erase("lastHeartbeatTime");
      }
    }
    out["status"] = std::move(kept);
  }
  return out;
}

json PodAsWatched(json pod) {
  json out = KeepIdentity(pod);
  if (auto spec = pod.find("spec"); spec != pod.end() && spec->is_object()) {
    json kept = Keep(*spec, {"nodeName", "schedulingGates", "overhead", "priority"});
    for (const char* list : {"containers", "initContainers"}) {
      if (auto c = spec->find(list); c != spec->end()) kept[list] = KeepContainers(*c);
    }
    out["spec"] = std::move(kept);
  }
  if (auto status = pod.find("status"); status != pod.end()) {
    out["status"] = Keep(*status, {"phase"});
  }
  return out;
}

std::string AttemptHolder(std::string_view job_uid, int32_t attempt) {
  return std::string(job_uid) + "@" + std::to_string(attempt);
}

std::optional<WorkerRef> WorkerOfPod(const json& pod) {
  const json& labels = Field(Field(pod, "metadata"), "labels");
  const json& managed_by = Field(labels, kManagedByLabel);
  const json& uid = Field(labels, api::kJobUidLabel);
  if (!managed_by.is_string() || managed_by != kManagedByValue || !uid.is_string() ||
      uid.get_ref<const std::string&>().empty()) {
    return std::nullopt;
  }
  const std::optional<int32_t> attempt = CountLabel(labels, api::kAttemptLabel);
  const std::optional<int32_t> rank = CountLabel(labels, api::kRankLabel);
  if (!attempt || !rank) return std::nullopt;
  return WorkerRef{AttemptHolder(uid.get_ref<const std::string&>(), *attempt), *rank};
}

}  // namespace kiln::fleet
