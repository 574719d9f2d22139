// Bounded waiting for tests that run servers on other threads: WaitFor polls
// a condition, Latch is a one-shot signal between a handler and the test.
// Both give up after a bound, so a broken server fails a test, not hangs it.
#ifndef KILN_TESTS_SUPPORT_WAIT_H_
#define KILN_TESTS_SUPPORT_WAIT_H_

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace kiln::testing {

inline constexpr std::chrono::seconds kWaitBound{20};

// Polls `done` every 5 ms until it returns true (true) or `bound` passes
// (false).
template <typename F>
bool WaitFor(F done, std::chrono::milliseconds bound = kWaitBound) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A one-shot signal between a handler and the test.
class Latch {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // True once opened; false after kWaitBound without.
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kWaitBound, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_WAIT_H_
