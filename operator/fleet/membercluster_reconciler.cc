#include "operator/fleet/membercluster_reconciler.h"

#include <algorithm>

#include "base/base64.h"
#include "base/duration.h"
#include "base/log.h"
#include "base/time_format.h"
#include "kube/api_error.h"
#include "kube/kubeconfig.h"
#include "operator/api/codec.h"
#include "operator/api/v1alpha1/membercluster.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/fleet/quarantine.h"

namespace kiln::fleet {
namespace {

using kube::json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr const char* kDefaultKey = "kubeconfig";

// FNV-1a: a stable hash of the kubeconfig text, to notice a changed Secret.
uint64_t Fnv1a(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

milliseconds DurationOr(const std::optional<std::string>& text, milliseconds fallback) {
  if (!text) return fallback;
  auto d = ParseDuration(*text);
  // The CRD's pattern admits only valid durations; a zero one would spin.
  if (!d.ok() || *d <= std::chrono::nanoseconds(0)) return fallback;
  return std::max(duration_cast<milliseconds>(*d), milliseconds(1));
}

std::string Seconds(Clock::Duration d) {
  return FormatDuration(duration_cast<std::chrono::nanoseconds>(duration_cast<milliseconds>(d)));
}

enum class Change { kNone, kNew, kFlipped };

// Sets condition `type` in `conditions`; lastTransitionTime moves only when
// the status flips.
Change SetCondition(json& conditions, const std::string& type, bool value,
                    const std::string& reason, const std::string& message, int64_t generation,
                    const std::string& now) {
  const std::string status = value ? "True" : "False";
  json next = {{"type", type},
               {"status", status},
               {"reason", reason},
               {"message", message},
               {"observedGeneration", generation},
               {"lastTransitionTime", now}};
  for (json& c : conditions) {
    if (c.value("type", "") != type) continue;
    const bool flipped = c.value("status", "") != status;
    if (!flipped) next["lastTransitionTime"] = c.value("lastTransitionTime", now);
    c = std::move(next);
    return flipped ? Change::kFlipped : Change::kNone;
  }
  conditions.push_back(std::move(next));
  return Change::kNew;
}

json DomainList(const std::map<std::string, placement::Capacity>& by) {
  json out = json::array();
  for (const auto& [name, c] : by) {
    out.push_back(
        {{"name", name}, {"nodes", c.nodes}, {"capacity", c.gpus}, {"allocatable", c.free_gpus}});
  }
  return out;
}

// A cache reader answers NotFound without an ApiError; the API with one.
bool IsNotFound(const Status& s) {
  return s.code() == StatusCode::kNotFound || kube::IsNotFound(s);
}

}  // namespace

std::string HeartbeatReason(const Status& error) {
  if (kube::IsUnauthorized(error)) return "Unauthorized";
  if (kube::IsForbidden(error)) return "Forbidden";
  if (error.code() == StatusCode::kFailedPrecondition) return "TLSError";
  if (error.code() == StatusCode::kDeadlineExceeded) return "HeartbeatTimeout";
  return "HeartbeatFailed";
}

Status ApiStatusWriter::Write(const json& cluster, const json& status) {
  json patch = {{"status", status}};
  return hub_
      .Patch(api::v1alpha1::kMemberClusters, "", cluster["metadata"].value("name", ""),
             kube::PatchType::kMerge, patch.dump(), {.subresource = "status"})
      .status();
}

MemberClusterReconciler::MemberClusterReconciler(const runtime::Reader& clusters,
                                                 const runtime::Reader& secrets,
                                                 Connector& connector, Members& members,
                                                 CapacityView& view, StatusWriter& status_writer,
                                                 EventFunc events,
                                                 MemberClusterReconcilerOptions options)
    : clusters_(clusters),
      secrets_(secrets),
      connector_(connector),
      members_(members),
      view_(view),
      status_writer_(status_writer),
      events_(std::move(events)),
      options_(std::move(options)) {}

MemberClusterReconciler::Health& MemberClusterReconciler::HealthOf(const std::string& name,
                                                                   const json& cluster) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = health_.try_emplace(name);
  if (inserted) {
    it->second.since = options_.clock->Now();
    // A new leader (or a restarted operator) counts from the last heartbeat
    // the status shows, so a member that was already silent is not given a
    // fresh unreachableAfter (and shown reachable meanwhile).
    auto last = ParseRfc3339(
        cluster.value("status", json::object()).value("lastHeartbeatTime", std::string()));
    if (last.ok()) {
      const auto gap = options_.wall_clock() - *last;
      if (gap > Clock::Duration::zero()) {
        it->second.since -= std::chrono::duration_cast<Clock::Duration>(gap);
      }
    }
  }
  return it->second;  // std::map entries stay put; one worker per key uses it.
}

std::vector<runtime::Request> MemberClusterReconciler::MapSecret(const kube::Object& secret) const {
  std::vector<runtime::Request> out;
  const json& meta = (*secret)["metadata"];
  const std::string ns = meta.value("namespace", ""), name = meta.value("name", "");
  auto all = clusters_.List();
  if (!all.ok()) return out;  // Not synced: the initial list reconciles everything anyway.
  for (const kube::Object& mc : *all) {
    const json ref = mc->value("spec", json::object()).value("kubeconfigSecretRef", json::object());
    if (ref.value("namespace", "") == ns && ref.value("name", "") == name) {
      out.push_back({"", (*mc)["metadata"].value("name", "")});
    }
  }
  return out;
}

std::optional<MemberClusterReconciler::Problem> MemberClusterReconciler::Connect(
    const json& cluster, const std::string& name, Health& h) {
  if (cluster["spec"].value("local", false)) {
    if (!options_.local_config) {
      return Problem{"LocalConfigMissing",
                     Status::FailedPrecondition(
                         "spec.local is true, but kiln-operator has no configuration of its "
                         "own cluster to give it")};
    }
    const uint64_t hash = Fnv1a("local " + options_.local_config->server);
    if (members_.ConfigHash(name) == hash) return std::nullopt;
    return Attach(cluster, name, h, *options_.local_config, hash,
                  "kiln-operator's own credentials (spec.local)", "InvalidLocalConfig");
  }
  const json ref = cluster["spec"].value("kubeconfigSecretRef", json::object());
  const std::string ns = ref.value("namespace", ""), secret_name = ref.value("name", "");
  const std::string key = ref.value("key", kDefaultKey);
  const std::string what = "Secret " + ns + "/" + secret_name;
  if (!options_.secret_namespace.empty() && ns != options_.secret_namespace) {
    return Problem{"SecretNamespaceNotWatched",
                   Status::FailedPrecondition(what + ": kiln reads kubeconfig Secrets only in " +
                                              options_.secret_namespace)};
  }
  auto secret = secrets_.Get(ns, secret_name);
  if (IsNotFound(secret.status())) {
    return Problem{"SecretNotFound", Status::NotFound(what + " not found")};
  }
  if (!secret.ok()) return Problem{"SecretUnreadable", secret.status()};
  const json data = (*secret)->value("data", json::object());
  if (!data.contains(key) || !data[key].is_string()) {
    return Problem{"SecretKeyMissing", Status::NotFound(what + " has no key " + key)};
  }
  auto text = Base64Decode(data[key].get<std::string>());
  if (!text.ok()) {
    return Problem{"InvalidKubeconfig",
                   Status::InvalidArgument(what + " key " + key + ": " + text.status().message())};
  }
  const uint64_t hash = Fnv1a(*text);
  if (members_.ConfigHash(name) == hash) return std::nullopt;
  // A kubeconfig that does not parse is a Problem, and the reconcile drops
  // the old connection for it.
  auto config = kube::ParseKubeconfig(*text, "", "", what + " key " + key);
  if (!config.ok()) return Problem{"InvalidKubeconfig", config.status()};
  return Attach(cluster, name, h, *config, hash, "the kubeconfig in " + what, "InvalidKubeconfig");
}

std::optional<MemberClusterReconciler::Problem> MemberClusterReconciler::Attach(
    const json& cluster, const std::string& name, Health& h, const kube::RestConfig& config,
    uint64_t hash, const std::string& how, const std::string& failure_reason) {
  // A new or changed configuration: drop the old connection and its
  // capacity first, so nothing is counted from stale credentials. A
  // replaced connection starts its health afresh; a first one keeps what
  // HealthOf seeded from the status.
  const bool replacing = members_.ConfigHash(name).has_value();
  members_.Remove(name);
  view_.RemoveCluster(name);
  view_.UpsertCluster({.name = name});
  auto member = connector_.Connect(name, config);
  if (!member.ok()) {
    view_.RemoveCluster(name);
    return Problem{failure_reason, member.status()};
  }
  members_.Put(name, *member, hash);
  if (replacing) {
    h.since = options_.clock->Now();
    h.last_success.reset();
  }
  h.last_probe.reset();  // Probe the new connection at once.
  events_(cluster, runtime::EventType::kNormal, "Connected",
          "connected to " + config.server + " with " + how);
  return std::nullopt;
}

StatusOr<runtime::Result> MemberClusterReconciler::Reconcile(const runtime::Context& ctx,
                                                             const runtime::Request& request) {
  const std::string& name = request.name;
  auto object = clusters_.Get("", name);
  if (IsNotFound(object.status())) {
    members_.Remove(name);
    view_.RemoveCluster(name);
    std::lock_guard<std::mutex> lock(mu_);
    health_.erase(name);
    return runtime::Result{};
  }
  KILN_RETURN_IF_ERROR(object.status());
  const json& cluster = **object;
  auto decoded = api::Decode<api::v1alpha1::MemberCluster>(cluster);
  if (!decoded.ok()) return runtime::Terminal(decoded.status());
  const api::v1alpha1::MemberClusterSpec& spec = decoded->spec;
  const milliseconds heartbeat = DurationOr(spec.heartbeat_interval, std::chrono::seconds(10));
  const milliseconds unreachable_after =
      DurationOr(spec.unreachable_after, std::chrono::seconds(40));
  Health& h = HealthOf(name, cluster);

  // Connection, then heartbeat (when one is due).
  std::optional<Problem> connect_problem = Connect(cluster, name, h);
  const std::string connect_reason = connect_problem ? connect_problem->reason : "";
  if (connect_problem && connect_reason != h.last_connect_reason) {
    events_(cluster, runtime::EventType::kWarning, connect_problem->reason,
            connect_problem->error.message());
  }
  h.last_connect_reason = connect_reason;
  std::shared_ptr<Member> member = members_.Get(name);
  Clock::TimePoint now = options_.clock->Now();
  bool probed_ok = false;
  if (connect_problem) {
    members_.Remove(name);
    view_.RemoveCluster(name);
    member = nullptr;
    h.problem = std::move(connect_problem);
    h.last_probe = now;
  } else if (member && (!h.last_probe || now - *h.last_probe >= heartbeat)) {
    KILN_RETURN_IF_ERROR(ctx.Err());
    Status probe = member->Probe(std::min(heartbeat, options_.probe_timeout));
    now = options_.clock->Now();
    h.last_probe = now;
    if (probe.ok()) {
      h.last_success = now;
      h.problem.reset();
      probed_ok = true;
    } else {
      h.problem = Problem{HeartbeatReason(probe), probe};
    }
  }

  // Conditions.
  const Clock::Duration silent = now - h.last_success.value_or(h.since);
  const bool failing = h.problem.has_value();
  const bool unreachable = failing && silent >= unreachable_after;
  Status synced = member ? member->CachesSynced() : Status::Unavailable("not connected");
  const bool ready = !failing && synced.ok();
  std::string ready_reason = "Connected",
              ready_message = "the API server answers and the caches are synced";
  if (failing) {
    ready_reason = h.problem->reason;
    ready_message = h.problem->error.message();
  } else if (!synced.ok()) {
    ready_reason = "CachesNotSynced";
    ready_message = synced.message();
  }
  // Messages stay the same while nothing changes, so a failing member's
  // status is not rewritten (and its watch event does not wake it) on every
  // reconcile.
  std::string unreachable_reason = "HeartbeatSucceeded", unreachable_message;
  if (failing && unreachable) {
    unreachable_reason = h.problem->reason;
    unreachable_message = "no successful heartbeat for more than " + Seconds(unreachable_after) +
                          ": " + h.problem->error.message();
  } else if (failing) {
    unreachable_reason = "HeartbeatFailing";
    unreachable_message = "heartbeats failing; unreachable after " + Seconds(unreachable_after) +
                          " without success: " + h.problem->error.message();
  } else {
    unreachable_message = "last heartbeat answered";
  }

  if (member) {
    placement::Labels labels;
    const json& meta = cluster["metadata"];
    if (auto it = meta.find("labels"); it != meta.end() && it->is_object()) {
      for (auto kv = it->begin(); kv != it->end(); ++kv) {
        if (kv.value().is_string()) labels.emplace(kv.key(), kv.value().get<std::string>());
      }
    }
    view_.UpsertCluster({.name = name,
                         .labels = labels,
                         .reachable = !unreachable,
                         .cordoned = spec.cordoned.value_or(false),
                         .weight = spec.weight.value_or(100),
                         .priority = spec.priority.value_or(0)});
  }

  // Quarantines that have ended come off with each heartbeat (quarantine.h).
  // A node that cannot be patched now is tried again on the next one.
  if (member && probed_ok && synced.ok()) {
    auto nodes = member->nodes().List();
    for (const auto& node : nodes.ok() ? *nodes : std::vector<kube::Object>{}) {
      auto lifted = LiftEndedQuarantine(member->client(), *node, options_.wall_clock());
      const std::string node_name = (*node)["metadata"].value("name", "");
      if (lifted.ok() && *lifted) {
        events_(cluster, runtime::EventType::kNormal, "QuarantineLifted",
                "node " + node_name + ": its kiln.dev/quarantined window has passed");
      } else if (!lifted.ok()) {
        log::Logger("membercluster")
            .Warn("cannot lift an ended quarantine",
                  {{"cluster", name}, {"node", node_name}, {"error", lifted.status().ToString()}});
      }
    }
  }

  // Status.
  const json old_status = cluster.value("status", json::object());
  json status = old_status;
  const int64_t generation = cluster["metadata"].value("generation", int64_t{0});
  const std::string wall = FormatRfc3339(options_.wall_clock());
  status["observedGeneration"] = generation;
  if (probed_ok) status["lastHeartbeatTime"] = wall;
  if (member && !member->version().empty()) status["kubernetesVersion"] = member->version();
  ClusterCapacity cap = view_.Capacity(name);
  status["nodes"] = cap.total.nodes;
  status["schedulableNodes"] = cap.schedulable_nodes;
  status["nodeCount"] = cap.node_count;
  status["quarantinedNodes"] = cap.quarantined_nodes;
  status["totalGPUs"] = cap.total.gpus;
  status["allocatableGPUs"] = cap.total.free_gpus;
  json gpus = json::array();
  for (const auto& [product, c] : cap.by_product) {
    if (product.empty() && c.gpus == 0) continue;  // Nodes without GPUs.
    gpus.push_back({{"model", product},
                    {"nodes", c.nodes},
                    {"capacity", c.gpus},
                    {"allocatable", c.free_gpus}});
  }
  status["gpus"] = gpus;
  status["zones"] = DomainList(cap.by_zone);
  status["racks"] = DomainList(cap.by_rack);
  status["nvlinkDomains"] = DomainList(cap.by_nvlink_domain);
  json conditions = status.value("conditions", json::array());
  const Change ready_change = SetCondition(conditions, kConditionReady, ready, ready_reason,
                                           ready_message, generation, wall);
  const Change unreachable_change =
      SetCondition(conditions, kConditionUnreachable, unreachable, unreachable_reason,
                   unreachable_message, generation, wall);
  status["conditions"] = conditions;

  if (status != old_status) {
    KILN_RETURN_IF_ERROR(status_writer_.Write(cluster, status));
  }
  // An Event for every flip, and for a new condition that starts out bad.
  if (ready_change == Change::kFlipped || (ready_change == Change::kNew && !ready)) {
    events_(cluster, ready ? runtime::EventType::kNormal : runtime::EventType::kWarning,
            ready ? "Ready" : "NotReady", ready_reason + ": " + ready_message);
  }
  if (unreachable_change == Change::kFlipped ||
      (unreachable_change == Change::kNew && unreachable)) {
    events_(cluster, unreachable ? runtime::EventType::kWarning : runtime::EventType::kNormal,
            unreachable ? "Unreachable" : "Reachable",
            unreachable_reason + ": " + unreachable_message);
  }

  // Next heartbeat.
  // Next heartbeat; sooner while the caches sync, so Ready follows them.
  Clock::Duration wait = heartbeat - (options_.clock->Now() - h.last_probe.value_or(now));
  if (!failing && !synced.ok()) wait = std::min<Clock::Duration>(wait, std::chrono::seconds(1));
  return runtime::Result{std::max(duration_cast<milliseconds>(wait), milliseconds(100))};
}

}  // namespace kiln::fleet
