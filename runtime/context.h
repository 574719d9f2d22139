// Context: what one reconcile may spend — a stop signal (the controller is
// stopping: shutdown or lost leadership) and an optional deadline. Reconcilers
// check done() between steps, wait through Sleep instead of sleeping, and
// bound API calls with Remaining. A default Context is never done. A plain
// value: copies share the stop signal; thread-safe.
#ifndef KILN_RUNTIME_CONTEXT_H_
#define KILN_RUNTIME_CONTEXT_H_

#include <chrono>
#include <optional>
#include <stop_token>

#include "base/status.h"

namespace kiln::runtime {

class Context {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Never done.
  Context() = default;
  Context(std::stop_token stop, std::optional<TimePoint> deadline)
      : stop_(std::move(stop)), deadline_(deadline) {}

  // The same stop signal with the earlier of the two deadlines.
  Context WithTimeout(std::chrono::milliseconds timeout) const;

  // True once stop was requested or the deadline has passed.
  bool done() const { return stopped() || expired(); }
  // True once stop was requested (the work will be dropped, not retried).
  bool stopped() const { return stop_.stop_requested(); }
  std::optional<TimePoint> deadline() const { return deadline_; }
  // Ok while not done; Cancelled after a stop, DeadlineExceeded after the deadline.
  Status Err() const;

  // Waits `d` or until done, whichever comes first; returns !done().
  bool Sleep(std::chrono::milliseconds d) const;
  // Time left before the deadline, capped at `cap` (which is also the answer
  // without a deadline); zero when done. For API call timeouts.
  std::chrono::milliseconds Remaining(std::chrono::milliseconds cap) const;

  const std::stop_token& stop_token() const { return stop_; }

 private:
  bool expired() const { return deadline_ && std::chrono::steady_clock::now() >= *deadline_; }

  std::stop_token stop_;
  std::optional<TimePoint> deadline_;
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_CONTEXT_H_
