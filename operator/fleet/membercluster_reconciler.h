// MemberClusterReconciler: the level-based reconcile of kiln.dev
// MemberClusters. For each one it
//   - reads the kubeconfig Secret the spec names and, when the kubeconfig's
//     hash differs from the one the live connection was built from (or there
//     is none), stops the old Member and connects a new one (client +
//     informers feeding the CapacityView) — so a rotated Secret reconnects;
//     a MemberCluster with spec.local connects with the operator's own
//     configuration instead (options.local_config), no Secret;
//   - heartbeats the member's /readyz every spec.heartbeatInterval (the
//     reconcile requeues itself for the next beat; reconciles in between,
//     e.g. woken by its own status write, reuse the last result);
//   - sets Ready (connected, answering, caches synced) and Unreachable (no
//     successful heartbeat for spec.unreachableAfter), each with a reason;
//     lastTransitionTime moves only when a condition's status flips, and each
//     flip is an Event;
//   - with each successful heartbeat, lifts the kiln.dev/quarantined taints
//     whose end has passed from the member's nodes (quarantine.h), with a
//     QuarantineLifted Event;
//   - writes status (conditions, node counts, GPUs by product, zone, rack and
//     NVLink domain, observedGeneration) through the status subresource, only
//     when it changed.
// Bad input (no Secret, no key, a kubeconfig that does not parse or cannot
// authenticate, a wrong CA) is a condition reason and a Warning Event, never
// a crash, and touches no other member. A deleted MemberCluster's member is
// stopped and leaves the CapacityView. Health is kept in memory; a new
// leader goes on from the lastHeartbeatTime in each status, so a member that
// was already silent stays Unreachable.
// Thread-safe: the controller may run several workers (never two on one key).
#ifndef KILN_OPERATOR_FLEET_MEMBERCLUSTER_RECONCILER_H_
#define KILN_OPERATOR_FLEET_MEMBERCLUSTER_RECONCILER_H_

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "kube/client.h"
#include "operator/fleet/capacity_view.h"
#include "operator/fleet/member.h"
#include "operator/fleet/members.h"
#include "runtime/event_recorder.h"
#include "runtime/reader.h"
#include "runtime/reconcile.h"

namespace kiln::fleet {

// Condition types and the reasons this controller sets.
inline constexpr const char* kConditionReady = "Ready";
inline constexpr const char* kConditionUnreachable = "Unreachable";

// Writes a MemberCluster's status through the status subresource.
class StatusWriter {
 public:
  virtual ~StatusWriter() = default;
  // `cluster` is the object as read; `status` the whole new status.
  virtual Status Write(const kube::json& cluster, const kube::json& status) = 0;
};

// The production StatusWriter: a merge patch of the status subresource.
class ApiStatusWriter final : public StatusWriter {
 public:
  explicit ApiStatusWriter(kube::Client& hub) : hub_(hub) {}
  Status Write(const kube::json& cluster, const kube::json& status) override;

 private:
  kube::Client& hub_;
};

// Records an Event about `object` (runtime::EventRecorder::Record in production).
using EventFunc = std::function<void(const kube::json& object, runtime::EventType type,
                                     const std::string& reason, const std::string& message)>;

struct MemberClusterReconcilerOptions {
  // The namespace whose Secrets the controller may read (and watches); a
  // MemberCluster naming a Secret elsewhere gets reason SecretNamespaceNotWatched.
  std::string secret_namespace;
  // The operator's own cluster configuration, for MemberClusters with
  // spec.local; none gives them reason LocalConfigMissing.
  std::optional<kube::RestConfig> local_config;
  // The longest a heartbeat may take (capped further by the interval).
  std::chrono::milliseconds probe_timeout{std::chrono::seconds(5)};
  Clock* clock = RealClock::Get();  // Heartbeat timing.
  // Wall-clock time for lastTransitionTime and lastHeartbeatTime.
  std::function<std::chrono::system_clock::time_point()> wall_clock = [] {
    return std::chrono::system_clock::now();
  };
};

class MemberClusterReconciler final : public runtime::Reconciler {
 public:
  // Every reference must outlive the reconciler. `clusters` reads
  // MemberClusters, `secrets` the Secrets of options.secret_namespace.
  MemberClusterReconciler(const runtime::Reader& clusters, const runtime::Reader& secrets,
                          Connector& connector, Members& members, CapacityView& view,
                          StatusWriter& status_writer, EventFunc events,
                          MemberClusterReconcilerOptions options = {});

  StatusOr<runtime::Result> Reconcile(const runtime::Context& ctx,
                                      const runtime::Request& request) override;

  // The MemberClusters whose kubeconfigSecretRef names `secret` (for the
  // controller's Watches on Secrets).
  std::vector<runtime::Request> MapSecret(const kube::Object& secret) const;

 private:
  // Why the member cannot be used right now: a condition reason and the error.
  struct Problem {
    std::string reason;
    Status error;
  };
  struct Health {
    Clock::TimePoint since;  // When tracking began (or the connection was replaced).
    std::optional<Clock::TimePoint> last_probe;
    std::optional<Clock::TimePoint> last_success;
    std::optional<Problem> problem;   // The last heartbeat's or connection's failure.
    std::string last_connect_reason;  // So a failing Secret is reported once per reason.
  };

  // Makes sure the registry holds a member built from the current Secret
  // (or the local configuration, for spec.local).
  std::optional<Problem> Connect(const kube::json& cluster, const std::string& name, Health& h);
  // Replaces `name`'s member by one connected with `config` (whose source
  // hashes to `hash`; `how` names it for the Connected Event). A config no
  // client can be built from is a Problem with `failure_reason`.
  std::optional<Problem> Attach(const kube::json& cluster, const std::string& name, Health& h,
                                const kube::RestConfig& config, uint64_t hash,
                                const std::string& how, const std::string& failure_reason);
  // `name`'s health, tracked from the last heartbeat `cluster`'s status
  // shows when it is new.
  Health& HealthOf(const std::string& name, const kube::json& cluster);

  const runtime::Reader& clusters_;
  const runtime::Reader& secrets_;
  Connector& connector_;
  Members& members_;
  CapacityView& view_;
  StatusWriter& status_writer_;
  const EventFunc events_;
  const MemberClusterReconcilerOptions options_;
  std::mutex mu_;
  std::map<std::string, Health> health_;  // Guarded by mu_ (the map; entries per key).
};

// The reason a failed heartbeat is reported with: Unauthorized (401: an
// expired or invalid token or certificate), Forbidden (403), TLSError (the
// server's certificate does not verify, or the client's is refused),
// HeartbeatTimeout, or HeartbeatFailed (cannot connect, 5xx).
std::string HeartbeatReason(const Status& error);

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_MEMBERCLUSTER_RECONCILER_H_
