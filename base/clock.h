// Clock: the passage of time, behind an interface so rate limiters, backoff
// and leases can be tested with a fake. RealClock is thread-safe.
#ifndef KILN_BASE_CLOCK_H_
#define KILN_BASE_CLOCK_H_

#include <chrono>
#include <thread>

namespace kiln {

class Clock {
 public:
  using Duration = std::chrono::steady_clock::duration;
  using TimePoint = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  virtual TimePoint Now() = 0;
  virtual void SleepFor(Duration d) = 0;
};

class RealClock final : public Clock {
 public:
  TimePoint Now() override { return std::chrono::steady_clock::now(); }
  void SleepFor(Duration d) override { std::this_thread::sleep_for(d); }

  // A process-wide instance.
  static RealClock* Get() {
    static RealClock clock;
    return &clock;
  }
};

}  // namespace kiln

#endif  // KILN_BASE_CLOCK_H_
