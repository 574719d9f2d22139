#include "runtime/work_queue.h"

#include <algorithm>
#include <cmath>

namespace kiln::runtime {

WorkQueue::WorkQueue(WorkQueueOptions options, Clock* clock)
    : options_(options),
      clock_(clock),
      overall_(options.overall_qps, options.overall_burst, clock),
      delay_thread_([this] { DelayLoop(); }) {}

WorkQueue::~WorkQueue() {
  ShutDown();
  if (delay_thread_.joinable()) delay_thread_.join();
}

void WorkQueue::AddLocked(const std::string& key) {
  if (shutting_down_) return;
  if (processing_.count(key) != 0) {
    dirty_.insert(key);  // Requeued by Done, so one worker at a time.
    return;
  }
  if (!queued_.insert(key).second) return;
  queue_.push_back(key);
  enqueued_at_[key] = clock_->Now();
  ready_cv_.notify_one();
}

void WorkQueue::Add(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.observer != nullptr) options_.observer->OnAdd();
  AddLocked(key);
}

void WorkQueue::AddAfter(const std::string& key, std::chrono::milliseconds delay) {
  if (delay.count() <= 0) {
    Add(key);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (shutting_down_) return;
  Clock::TimePoint due = clock_->Now() + delay;
  auto it = waiting_.find(key);
  if (it != waiting_.end()) {
    if (it->second <= due) return;  // Already due sooner.
    auto range = waiting_by_due_.equal_range(it->second);
    for (auto r = range.first; r != range.second; ++r) {
      if (r->second == key) {
        waiting_by_due_.erase(r);
        break;
      }
    }
  }
  waiting_[key] = due;
  waiting_by_due_.emplace(due, key);
  delay_cv_.notify_one();
}

void WorkQueue::AddRateLimited(const std::string& key) {
  int failures;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failures = failures_[key]++;
    if (options_.observer != nullptr) options_.observer->OnRetry();
  }
  double backoff_ms =
      static_cast<double>(options_.base_backoff.count()) * std::pow(2.0, std::min(failures, 62));
  auto per_key = std::chrono::milliseconds(static_cast<long long>(
      std::min(backoff_ms, static_cast<double>(options_.max_backoff.count()))));
  auto overall = std::chrono::duration_cast<std::chrono::milliseconds>(overall_.Reserve());
  AddAfter(key, std::max(per_key, overall));
}

void WorkQueue::Forget(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_.erase(key);
}

int WorkQueue::Failures(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

std::optional<std::string> WorkQueue::Get() {
  std::unique_lock<std::mutex> lock(mu_);
  ready_cv_.wait(lock, [this] { return !queue_.empty() || shutting_down_; });
  if (queue_.empty()) return std::nullopt;
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  queued_.erase(key);
  Clock::TimePoint now = clock_->Now();
  if (options_.observer != nullptr) options_.observer->OnStart(now - enqueued_at_[key]);
  enqueued_at_.erase(key);
  processing_.insert(key);
  started_at_[key] = now;
  return key;
}

void WorkQueue::Done(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (processing_.erase(key) == 0) return;  // Not handed out: nothing to finish.
  auto started = started_at_.find(key);
  if (options_.observer != nullptr && started != started_at_.end()) {
    options_.observer->OnDone(clock_->Now() - started->second);
  }
  started_at_.erase(key);
  if (dirty_.erase(key) != 0) AddLocked(key);
}

void WorkQueue::ShutDown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutting_down_ = true;
  waiting_.clear();
  waiting_by_due_.clear();
  dirty_.clear();
  ready_cv_.notify_all();
  delay_cv_.notify_all();
}

bool WorkQueue::shutting_down() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shutting_down_;
}

void WorkQueue::PromoteDueLocked() {
  Clock::TimePoint now = clock_->Now();
  while (!waiting_by_due_.empty() && waiting_by_due_.begin()->first <= now) {
    std::string key = waiting_by_due_.begin()->second;
    waiting_by_due_.erase(waiting_by_due_.begin());
    waiting_.erase(key);
    AddLocked(key);
  }
}

void WorkQueue::DelayLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    PromoteDueLocked();
    if (waiting_by_due_.empty()) {
      delay_cv_.wait(lock);  // Nothing delayed: sleep until AddAfter or ShutDown.
      continue;
    }
    // Real time paces the wait, the clock decides what is due; the cap lets
    // tests with a fake clock see keys come due soon after advancing it.
    auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
        waiting_by_due_.begin()->first - clock_->Now());
    delay_cv_.wait_for(
        lock, std::clamp(until, std::chrono::milliseconds(1), std::chrono::milliseconds(100)));
  }
}

size_t WorkQueue::Len() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

size_t WorkQueue::WaitingLen() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.size();
}

Clock::Duration WorkQueue::OldestWait() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.empty()) return Clock::Duration::zero();
  return clock_->Now() - enqueued_at_.at(queue_.front());
}

}  // namespace kiln::runtime
