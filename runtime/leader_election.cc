#include "runtime/leader_election.h"

#include <ctime>

#include "base/time_format.h"
#include "kube/api_error.h"

namespace kiln::runtime {
namespace {

using kube::json;

// metav1.MicroTime: RFC 3339 with microseconds, UTC.
std::string MicroTimeNow() { return FormatRfc3339(std::chrono::system_clock::now(), 6); }

int DurationSeconds(std::chrono::milliseconds d) {
  return static_cast<int>(std::max<long long>(1, (d.count() + 999) / 1000));
}

}  // namespace

Status LeaderElector::Validate(const LeaderElectionConfig& c) {
  if (c.lease_namespace.empty() || c.lease_name.empty() || c.identity.empty()) {
    return Status::InvalidArgument("leader election needs a lease namespace, name and identity");
  }
  if (!(c.lease_duration > c.renew_deadline && c.renew_deadline > c.retry_period &&
        c.retry_period.count() > 0)) {
    return Status::InvalidArgument(
        "leader election needs lease duration > renew deadline > retry period > 0");
  }
  return Status::Ok();
}

LeaderElector::LeaderElector(kube::Client& client, LeaderElectionConfig config, Clock* clock)
    : client_(client), config_(std::move(config)), clock_(clock) {}

std::string LeaderElector::ObservedHolder() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (observed_.is_null()) return "";
  return observed_["spec"].value("holderIdentity", "");
}

json LeaderElector::NewSpec(const json& old_spec) const {
  std::string now = MicroTimeNow();
  json spec = {{"holderIdentity", config_.identity},
               {"leaseDurationSeconds", DurationSeconds(config_.lease_duration)},
               {"renewTime", now}};
  bool same_holder =
      old_spec.is_object() && old_spec.value("holderIdentity", "") == config_.identity;
  int transitions = old_spec.is_object() ? old_spec.value("leaseTransitions", 0) : 0;
  spec["acquireTime"] = same_holder ? old_spec.value("acquireTime", now) : now;
  spec["leaseTransitions"] =
      same_holder || !old_spec.is_object() || old_spec.value("holderIdentity", "").empty()
          ? transitions
          : transitions + 1;
  return spec;
}

StatusOr<bool> LeaderElector::TryAcquireOrRenew() {
  const auto& leases = kube::resources::kLeases;
  auto current = client_.Get(leases, config_.lease_namespace, config_.lease_name);
  if (!current.ok()) {
    if (!kube::IsNotFound(current.status())) return current.status();
    json lease = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
        {"spec", NewSpec(nullptr)}};
    auto created = client_.Create(leases, config_.lease_namespace, lease);
    if (!created.ok()) {
      if (kube::IsAlreadyExists(created.status())) return false;  // Lost the race.
      return created.status();
    }
    std::lock_guard<std::mutex> lock(mu_);
    observed_ = *created;
    observed_at_ = clock_->Now();
    return true;
  }
  const json& spec = (*current)["spec"];
  std::string holder = spec.value("holderIdentity", "");
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Restart the expiry clock whenever the record changed since we last looked.
    if (observed_.is_null() || observed_["metadata"].value("resourceVersion", "") !=
                                   (*current)["metadata"].value("resourceVersion", "")) {
      observed_ = *current;
      observed_at_ = clock_->Now();
    }
    auto duration = std::chrono::seconds(spec.value("leaseDurationSeconds", 0));
    bool expired = clock_->Now() > observed_at_ + duration;
    if (!holder.empty() && holder != config_.identity && !expired) return false;
  }
  json updated = *current;
  updated["spec"] = NewSpec(spec);
  auto written = client_.Update(leases, updated);
  if (!written.ok()) {
    if (kube::IsConflict(written.status())) return false;  // Someone else wrote first.
    return written.status();
  }
  std::lock_guard<std::mutex> lock(mu_);
  observed_ = *written;
  observed_at_ = clock_->Now();
  return true;
}

Status LeaderElector::Release() {
  json lease;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (observed_.is_null() || observed_["spec"].value("holderIdentity", "") != config_.identity) {
      return Status::Ok();
    }
    lease = observed_;
  }
  lease["spec"]["holderIdentity"] = "";
  lease["spec"]["leaseDurationSeconds"] = 1;
  lease["spec"]["renewTime"] = MicroTimeNow();
  auto written = client_.Update(kube::resources::kLeases, lease);
  if (!written.ok()) return written.status().WithContext("releasing lease");
  std::lock_guard<std::mutex> lock(mu_);
  observed_ = *written;
  observed_at_ = clock_->Now();
  return Status::Ok();
}

void LeaderElector::Run(const std::function<void()>& on_started,
                        const std::function<void()>& on_stopped, const std::atomic<bool>& stop) {
  // Campaign.
  while (!stop.load()) {
    auto won = TryAcquireOrRenew();
    if (won.ok() && *won) break;
    clock_->SleepFor(config_.retry_period);
  }
  if (stop.load()) return;
  leading_ = true;
  if (on_started) on_started();
  // Renew; give up when no renewal succeeds within the renew deadline.
  Clock::TimePoint last_renew = clock_->Now();
  while (!stop.load()) {
    clock_->SleepFor(config_.retry_period);
    if (stop.load()) break;
    auto renewed = TryAcquireOrRenew();
    if (renewed.ok() && *renewed) {
      last_renew = clock_->Now();
    } else if (renewed.ok() || clock_->Now() - last_renew > config_.renew_deadline) {
      // Another holder took over, or we could not renew in time.
      break;
    }
  }
  leading_ = false;
  if (on_stopped) on_stopped();
  // Best effort: a lease that could not be released expires after
  // lease_duration, and another candidate takes it then.
  if (stop.load() && config_.release_on_stop) (void)Release();
}

}  // namespace kiln::runtime
