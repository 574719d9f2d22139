// LeaderElector: leader election on a coordination.k8s.io/v1 Lease, with
// client-go's semantics. A candidate takes the lease when it is absent, free
// or expired — expiry judged by when this candidate last saw the record
// change (its own clock), so clock skew between machines does not matter —
// and renews it every retry period; if it cannot renew within the renew
// deadline it stops leading. Updates use the Lease's resourceVersion, so two
// candidates can never both win. Thread-safe.
#ifndef KILN_RUNTIME_LEADER_ELECTION_H_
#define KILN_RUNTIME_LEADER_ELECTION_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "base/clock.h"
#include "kube/client.h"

namespace kiln::runtime {

struct LeaderElectionConfig {
  std::string lease_namespace;
  std::string lease_name;
  std::string identity;  // Unique per candidate, e.g. pod name + random suffix.
  std::chrono::milliseconds lease_duration{std::chrono::seconds(15)};
  std::chrono::milliseconds renew_deadline{std::chrono::seconds(10)};
  std::chrono::milliseconds retry_period{std::chrono::seconds(2)};
  // On a clean stop, hand the lease back so another candidate takes over at
  // once instead of waiting for it to expire.
  bool release_on_stop = true;
};

class LeaderElector {
 public:
  // InvalidArgument unless lease_duration > renew_deadline > retry_period > 0
  // and names and identity are set.
  static Status Validate(const LeaderElectionConfig& config);

  // `client` and `clock` must outlive the elector.
  LeaderElector(kube::Client& client, LeaderElectionConfig config, Clock* clock = RealClock::Get());

  // Campaigns until leading (or `stop`), calls `on_started`, renews until
  // leadership is lost or `stop` is set, then calls `on_stopped` (if it had
  // started) and, on a clean stop, releases the lease. Blocks the caller.
  void Run(const std::function<void()>& on_started, const std::function<void()>& on_stopped,
           const std::atomic<bool>& stop);

  bool IsLeader() const { return leading_.load(); }
  // The holder this candidate last observed ("" when none).
  std::string ObservedHolder() const;

  // One attempt to take or renew the lease: true when this candidate holds it
  // afterwards. Errors are API failures; losing to another holder is not one.
  StatusOr<bool> TryAcquireOrRenew();
  // Hands the lease back if this candidate holds it.
  Status Release();

 private:
  kube::json NewSpec(const kube::json& old_spec) const;

  kube::Client& client_;
  const LeaderElectionConfig config_;
  Clock* const clock_;
  std::atomic<bool> leading_{false};
  mutable std::mutex mu_;
  kube::json observed_;  // Last Lease seen; guarded by mu_.
  Clock::TimePoint observed_at_{};
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_LEADER_ELECTION_H_
