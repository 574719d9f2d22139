#include "runtime/phase_gauge.h"

namespace kiln::runtime {

bool PhaseGauge::Set(const std::string& key, const std::string& phase) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = phases_.find(key);
  const std::string old = it == phases_.end() ? "" : it->second;
  if (old == phase) return false;
  if (!old.empty()) family_.Add({{"phase", old}}).Decrement();
  if (phase.empty()) {
    phases_.erase(key);
  } else {
    phases_[key] = phase;
    family_.Add({{"phase", phase}}).Increment();
  }
  return true;
}

}  // namespace kiln::runtime
