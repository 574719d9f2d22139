#include "operator/fleet/node_and_pod.h"

#include <algorithm>
#include <charconv>

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
  bool ready = false;
  if (const json& conditions = Field(status, "conditions"); conditions.is_array()) {
    for (const json& c : conditions) {
      if (c.value("type", "") == "Ready") ready = c.value("status", "") == "True";
    }
  }
  const json& unschedulable = Field(spec, "unschedulable");
  info.schedulable = ready && !(unschedulable.is_boolean() && unschedulable.get<bool>());
  return info;
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
