#include "base/token_bucket.h"

#include <algorithm>

namespace kiln {

TokenBucket::TokenBucket(double rate, int burst, Clock* clock)
    : rate_(rate),
      burst_(std::max(1, burst)),
      clock_(clock),
      tokens_(std::max(1, burst)),
      last_(clock->Now()) {}

void TokenBucket::Refill(Clock::TimePoint now) {
  std::chrono::duration<double> elapsed = now - last_;
  tokens_ = std::min(burst_, tokens_ + elapsed.count() * rate_);
  last_ = now;
}

Clock::Duration TokenBucket::Reserve() {
  if (rate_ <= 0) return Clock::Duration::zero();
  std::lock_guard<std::mutex> lock(mu_);
  Refill(clock_->Now());
  tokens_ -= 1;
  if (tokens_ >= 0) return Clock::Duration::zero();
  return std::chrono::duration_cast<Clock::Duration>(
      std::chrono::duration<double>(-tokens_ / rate_));
}

void TokenBucket::Wait() {
  Clock::Duration d = Reserve();
  if (d > Clock::Duration::zero()) clock_->SleepFor(d);
}

bool TokenBucket::TryAccept() {
  if (rate_ <= 0) return true;
  std::lock_guard<std::mutex> lock(mu_);
  Refill(clock_->Now());
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

}  // namespace kiln
