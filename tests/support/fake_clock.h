// FakeClock: a Clock that moves only when told to; SleepFor advances it
// instantly and records the request. Thread-safe.
#ifndef KILN_TESTS_SUPPORT_FAKE_CLOCK_H_
#define KILN_TESTS_SUPPORT_FAKE_CLOCK_H_

#include <mutex>
#include <vector>

#include "base/clock.h"

namespace kiln::testing {

class FakeClock final : public Clock {
 public:
  TimePoint Now() override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void SleepFor(Duration d) override {
    std::lock_guard<std::mutex> lock(mu_);
    sleeps_.push_back(d);
    now_ += d;
  }
  void Advance(Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }
  std::vector<Duration> sleeps() {
    std::lock_guard<std::mutex> lock(mu_);
    return sleeps_;
  }

 private:
  std::mutex mu_;
  TimePoint now_{};
  std::vector<Duration> sleeps_;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_FAKE_CLOCK_H_
