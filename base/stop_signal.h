// StopSignal: turns SIGTERM and SIGINT into a stop request that long-running
// loops poll (`requested()`) or wait on (`WaitFor`), as controller-runtime's
// SetupSignalHandler does. The first signal asks for a graceful stop; a second
// one exits at once with status 1, for an operator who does not want to wait.
// Signals are taken by a dedicated thread with sigwait, so no work happens in
// a signal handler. Install from main before starting any other thread: the
// signals are blocked in the calling thread and every thread it starts later.
#ifndef KILN_BASE_STOP_SIGNAL_H_
#define KILN_BASE_STOP_SIGNAL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace kiln {

class StopSignal {
 public:
  // The process-wide instance; the first call installs it.
  static StopSignal& Install();

  const std::atomic<bool>& requested() const { return requested_; }
  // The signal that asked for the stop (0 if none, or if Request was used).
  int signal_number() const { return signal_.load(); }
  // True once a stop was requested, waiting up to `timeout` for one.
  bool WaitFor(std::chrono::milliseconds timeout);
  // Asks for a stop as a signal would (e.g. on a fatal error elsewhere).
  void Request();

 private:
  StopSignal() = default;
  void Loop();

  std::atomic<bool> requested_{false};
  std::atomic<int> signal_{0};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace kiln

#endif  // KILN_BASE_STOP_SIGNAL_H_
