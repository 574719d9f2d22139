// EventRecorder: records core/v1 Events about objects, as client-go's
// record.EventRecorder does, so `kubectl describe` shows what the operator did
// and why. Recording never blocks a reconcile: events go to a bounded queue
// written by a background thread. Repeats of the same event (same object,
// type, reason and message) within the aggregation window update one Event's
// count and lastTimestamp instead of creating new ones, and a per-object
// token bucket (burst 25, one more every 5 minutes, as client-go) keeps a hot
// loop from flooding the API server. Events are best effort: a full queue or a
// failed write drops the event and counts it. Thread-safe.
#ifndef KILN_RUNTIME_EVENT_RECORDER_H_
#define KILN_RUNTIME_EVENT_RECORDER_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/clock.h"
#include "base/log.h"
#include "base/token_bucket.h"
#include "kube/client.h"

namespace kiln::runtime {

enum class EventType { kNormal, kWarning };

struct EventRecorderOptions {
  std::string component = "kiln-operator";  // source.component
  std::string host;                         // source.host, e.g. the pod name
  size_t max_queued = 1000;
  int object_burst = 25;
  double object_refill_per_second = 1.0 / 300;
  std::chrono::milliseconds aggregation_window{std::chrono::minutes(10)};
  size_t max_tracked = 4096;  // Objects and event series remembered.
};

struct EventRecorderStats {
  int64_t created = 0;
  int64_t aggregated = 0;    // Repeats folded into an existing Event.
  int64_t dropped = 0;       // Queue full, or the object's budget spent.
  int64_t write_errors = 0;  // The API server refused or could not be reached.
};

class EventRecorder {
 public:
  // `client` and `clock` must outlive the recorder.
  EventRecorder(kube::Client& client, EventRecorderOptions options,
                Clock* clock = RealClock::Get());
  ~EventRecorder();  // Writes what is queued (up to 5 s), then stops.
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  // Records an event about `object` (a Kubernetes object with apiVersion,
  // kind and metadata). `reason` is UpperCamelCase, e.g. "RolledBack".
  void Record(const kube::json& object, EventType type, const std::string& reason,
              const std::string& message);

  // Waits until every event recorded so far is written; false on timeout.
  bool Flush(std::chrono::milliseconds timeout);
  EventRecorderStats stats() const;

 private:
  struct Pending {
    kube::json involved;
    std::string ns;
    EventType type;
    std::string reason;
    std::string message;
    std::chrono::system_clock::time_point at;
  };
  struct Series {
    std::string name;  // The Event object's name.
    std::string ns;
    int64_t count = 0;
    Clock::TimePoint last;
  };

  void Loop();
  void Write(const Pending& p);
  bool Admit(const std::string& object_key);  // Requires mu_.

  kube::Client& client_;
  const EventRecorderOptions options_;
  Clock* const clock_;
  const log::Logger log_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Pending> queue_;
  bool writing_ = false;
  bool stop_ = false;
  EventRecorderStats stats_;
  std::map<std::string, std::unique_ptr<TokenBucket>> budgets_;  // Guarded by mu_.
  std::map<std::string, Series> series_;  // Only the writer thread touches it.
  std::thread thread_;
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_EVENT_RECORDER_H_
