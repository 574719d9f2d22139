#include "base/context.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

namespace kiln {

namespace {
thread_local const Context* current_context = nullptr;
}  // namespace

Context Context::WithTimeout(std::chrono::milliseconds timeout) const {
  TimePoint at = std::chrono::steady_clock::now() + timeout;
  return Context(stop_, deadline_ ? std::min(*deadline_, at) : at);
}

Status Context::Err() const {
  if (stopped()) return Status::Cancelled("context stopped");
  if (expired()) return Status::DeadlineExceeded("context deadline exceeded");
  return Status::Ok();
}

bool Context::Sleep(std::chrono::milliseconds d) const {
  TimePoint until = std::chrono::steady_clock::now() + d;
  if (deadline_) until = std::min(until, *deadline_);
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock<std::mutex> lock(mu);
  // Nothing notifies cv but a stop request, which the stop_token overload waits for.
  cv.wait_until(lock, stop_, until, [] { return false; });
  return !done();
}

std::chrono::milliseconds Context::Remaining(std::chrono::milliseconds cap) const {
  if (done()) return std::chrono::milliseconds(0);
  if (!deadline_) return cap;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      *deadline_ - std::chrono::steady_clock::now());
  return std::clamp(left, std::chrono::milliseconds(0), cap);
}

const Context* Context::Current() { return current_context; }

ScopedContext::ScopedContext(Context ctx) : ctx_(std::move(ctx)), previous_(current_context) {
  current_context = &ctx_;
}

ScopedContext::~ScopedContext() { current_context = previous_; }

}  // namespace kiln
