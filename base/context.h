// Context: what one piece of work may spend — a stop signal (the caller is
// stopping: shutdown or lost leadership) and an optional deadline, in the
// spirit of Go's context.Context. Reconcilers get one per call; they check
// done() between steps and wait through Sleep instead of sleeping. A default
// Context is never done. A plain value: copies share the stop signal;
// thread-safe.
//
// ScopedContext makes a context the thread's current one (Context::Current)
// for its lifetime. The Kubernetes client bounds every call by the current
// context: each attempt's timeout by the time left, no retry or rate-limit
// wait past the deadline or after a stop. The controller runtime installs the
// reconcile's context around Reconcile, so every API call a reconciler makes
// is bounded without each call site passing it (the alternative, a context
// parameter on every client method, is what client-go does; one scope per
// reconcile gives the same bound with one place to get it right).
#ifndef KILN_BASE_CONTEXT_H_
#define KILN_BASE_CONTEXT_H_

#include <chrono>
#include <optional>
#include <stop_token>

#include "base/status.h"

namespace kiln {

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

  // The innermost ScopedContext of this thread, or nullptr.
  static const Context* Current();

 private:
  bool expired() const { return deadline_ && std::chrono::steady_clock::now() >= *deadline_; }

  std::stop_token stop_;
  std::optional<TimePoint> deadline_;
};

// Makes `ctx` the thread's current context until destroyed; the previous
// one (if any) is current again afterwards. Scopes nest; not movable.
class ScopedContext {
 public:
  explicit ScopedContext(Context ctx);
  ~ScopedContext();
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  Context ctx_;
  const Context* previous_;
};

}  // namespace kiln

#endif  // KILN_BASE_CONTEXT_H_
