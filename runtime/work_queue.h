// WorkQueue: the controller work queue in the style of client-go's
// rate-limited workqueue. Keys are deduplicated: a key added while queued is
// queued once; a key added while a worker processes it is queued again only
// after Done, so no key is ever processed by two workers at once. Failed keys
// come back after per-key exponential backoff, and every rate-limited add also
// passes an overall token bucket. Thread-safe.
#ifndef KILN_RUNTIME_WORK_QUEUE_H_
#define KILN_RUNTIME_WORK_QUEUE_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "base/clock.h"
#include "base/token_bucket.h"

namespace kiln::runtime {

// Told of what happens in a queue, for metrics (workqueue_* in client-go).
// Called with the queue's lock held: must be cheap and must not call back.
class WorkQueueObserver {
 public:
  virtual ~WorkQueueObserver() = default;
  virtual void OnAdd() = 0;                             // Every Add, deduplicated or not.
  virtual void OnRetry() = 0;                           // Every AddRateLimited.
  virtual void OnStart(Clock::Duration queued) = 0;     // Get handed out a key that waited so long.
  virtual void OnDone(Clock::Duration processing) = 0;  // Done, after so long in process.
};

struct WorkQueueOptions {
  std::chrono::milliseconds base_backoff{5};  // First retry delay of a failing key.
  std::chrono::milliseconds max_backoff{std::chrono::seconds(1000)};
  double overall_qps = 10;  // Shared bucket for all rate-limited adds.
  int overall_burst = 100;
  WorkQueueObserver* observer = nullptr;  // Optional; must outlive the queue.
};

class WorkQueue {
 public:
  explicit WorkQueue(WorkQueueOptions options = {}, Clock* clock = RealClock::Get());
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `key` now (no-op if already queued, or deferred if in process).
  void Add(const std::string& key);
  // Queues `key` after `delay`; an earlier pending time for the key wins.
  void AddAfter(const std::string& key, std::chrono::milliseconds delay);
  // Queues `key` after its backoff (base * 2^failures, capped) or the overall
  // bucket's delay, whichever is longer; counts a failure for the key.
  void AddRateLimited(const std::string& key);
  // Resets the key's failure count (call after a successful reconcile).
  void Forget(const std::string& key);
  int Failures(const std::string& key) const;

  // Blocks for the next key; nullopt once ShutDown was called and the queue
  // is drained. The caller must call Done(key) when finished with it.
  std::optional<std::string> Get();
  void Done(const std::string& key);

  // Stops accepting work and wakes every Get; queued keys are still handed out
  // until the queue is empty. Delayed adds not yet due are dropped.
  void ShutDown();
  bool shutting_down() const;

  size_t Len() const;         // Keys ready to process.
  size_t WaitingLen() const;  // Keys waiting for a delay.
  // How long the oldest ready key has waited (queue latency), zero if none.
  Clock::Duration OldestWait() const;

 private:
  void AddLocked(const std::string& key);
  void PromoteDueLocked();
  void DelayLoop();

  const WorkQueueOptions options_;
  Clock* const clock_;
  TokenBucket overall_;
  mutable std::mutex mu_;
  std::condition_variable ready_cv_;
  std::condition_variable delay_cv_;
  std::deque<std::string> queue_;
  std::unordered_set<std::string> queued_;      // Keys in queue_.
  std::unordered_set<std::string> processing_;  // Keys handed out, not Done.
  std::unordered_set<std::string> dirty_;       // Added while processing.
  std::unordered_map<std::string, Clock::TimePoint> enqueued_at_;
  std::unordered_map<std::string, Clock::TimePoint> started_at_;  // Keys in processing_.
  std::unordered_map<std::string, int> failures_;
  std::map<std::string, Clock::TimePoint> waiting_;              // key -> due time
  std::multimap<Clock::TimePoint, std::string> waiting_by_due_;  // due time -> key
  bool shutting_down_ = false;
  std::thread delay_thread_;
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_WORK_QUEUE_H_
