// TokenBucket: a rate limiter allowing `rate` events per second on average and
// bursts of up to `burst`. Thread-safe.
#ifndef KILN_BASE_TOKEN_BUCKET_H_
#define KILN_BASE_TOKEN_BUCKET_H_

#include <mutex>

#include "base/clock.h"

namespace kiln {

class TokenBucket {
 public:
  // `rate` <= 0 disables limiting. `clock` must outlive the bucket.
  TokenBucket(double rate, int burst, Clock* clock = RealClock::Get());
  TokenBucket(const TokenBucket&) = delete;
  TokenBucket& operator=(const TokenBucket&) = delete;

  // Takes a token, returning how long the caller must wait before acting
  // (zero when one was available). Tokens are reserved in order, so callers
  // are served first come, first served.
  Clock::Duration Reserve();

  // Takes a token and sleeps until it is due.
  void Wait();

  // Takes a token only if one is available now.
  bool TryAccept();

 private:
  void Refill(Clock::TimePoint now);  // Requires mu_.

  const double rate_;
  const double burst_;
  Clock* const clock_;
  std::mutex mu_;
  double tokens_;          // May go negative: reservations not yet due.
  Clock::TimePoint last_;  // Guarded by mu_.
};

}  // namespace kiln

#endif  // KILN_BASE_TOKEN_BUCKET_H_
