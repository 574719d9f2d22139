#include "runtime/event_recorder.h"

#include <cstdio>

#include "base/time_format.h"
#include "kube/api_error.h"

namespace kiln::runtime {
namespace {}  // namespace

EventRecorder::EventRecorder(kube::Client& client, EventRecorderOptions options, Clock* clock)
    : client_(client),
      options_(std::move(options)),
      clock_(clock),
      log_(log::Logger("events")),
      thread_([this] { Loop(); }) {}

EventRecorder::~EventRecorder() {
  Flush(std::chrono::seconds(5));
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool EventRecorder::Admit(const std::string& object_key) {
  auto it = budgets_.find(object_key);
  if (it == budgets_.end()) {
    if (budgets_.size() >= options_.max_tracked) budgets_.clear();  // Forget old objects.
    it = budgets_
             .emplace(object_key, std::make_unique<TokenBucket>(options_.object_refill_per_second,
                                                                options_.object_burst, clock_))
             .first;
  }
  return it->second->TryAccept();
}

void EventRecorder::Record(const kube::json& object, EventType type, const std::string& reason,
                           const std::string& message) {
  const kube::json& md = object.contains("metadata") ? object["metadata"] : kube::json::object();
  Pending p;
  p.involved = {{"apiVersion", object.value("apiVersion", "")},
                {"kind", object.value("kind", "")},
                {"name", md.value("name", "")}};
  for (const char* f : {"namespace", "uid", "resourceVersion"}) {
    if (md.contains(f)) p.involved[f] = md[f];
  }
  // Events about cluster-scoped objects live in "default", as kubectl expects.
  p.ns = md.value("namespace", "");
  if (p.ns.empty()) p.ns = "default";
  p.type = type;
  p.reason = reason;
  p.message = message.size() > 1024 ? message.substr(0, 1021) + "..." : message;
  p.at = std::chrono::system_clock::now();
  std::string object_key = p.involved.value("uid", "") + "/" + p.involved.value("kind", "") + "/" +
                           p.ns + "/" + p.involved.value("name", "");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() >= options_.max_queued || !Admit(object_key)) {
      ++stats_.dropped;
      return;
    }
    queue_.push_back(std::move(p));
  }
  cv_.notify_one();
}

bool EventRecorder::Flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [this] { return queue_.empty() && !writing_; });
}

EventRecorderStats EventRecorder::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void EventRecorder::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // Stopping, nothing left.
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    Write(p);
    lock.lock();
    writing_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

void EventRecorder::Write(const Pending& p) {
  const std::string type = p.type == EventType::kWarning ? "Warning" : "Normal";
  const std::string series_key =
      p.involved.dump() + "\n" + type + "\n" + p.reason + "\n" + p.message;
  const Clock::TimePoint now = clock_->Now();
  auto it = series_.find(series_key);
  if (it != series_.end() && now - it->second.last <= options_.aggregation_window) {
    Series& s = it->second;
    kube::json patch = {{"count", s.count + 1}, {"lastTimestamp", FormatRfc3339(p.at)}};
    auto patched = client_.Patch(kube::resources::kEvents, s.ns, s.name, kube::PatchType::kMerge,
                                 patch.dump());
    if (patched.ok()) {
      s.count += 1;
      s.last = now;
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.aggregated;
      return;
    }
    if (!kube::IsNotFound(patched.status())) {
      log_.Error(patched.status(), "could not update event", {{"event", s.name}});
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.write_errors;
      return;
    }
    series_.erase(it);  // Expired or deleted on the server: start a new one.
  }
  // Names as client-go makes them: the object's name and a hex timestamp.
  char suffix[24];
  std::snprintf(
      suffix, sizeof(suffix), ".%llx",
      static_cast<unsigned long long>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(p.at.time_since_epoch()).count()));
  const std::string name = p.involved.value("name", "event") + suffix;
  kube::json event = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"name", name}, {"namespace", p.ns}}},
      {"involvedObject", p.involved},
      {"reason", p.reason},
      {"message", p.message},
      {"type", type},
      {"count", 1},
      {"firstTimestamp", FormatRfc3339(p.at)},
      {"lastTimestamp", FormatRfc3339(p.at)},
      {"source", {{"component", options_.component}, {"host", options_.host}}},
      {"reportingComponent", options_.component},
      {"reportingInstance", options_.host.empty() ? options_.component : options_.host}};
  auto created = client_.Create(kube::resources::kEvents, p.ns, event);
  std::lock_guard<std::mutex> lock(mu_);
  if (!created.ok()) {
    ++stats_.write_errors;
    log_.Error(created.status(), "could not record event",
               {{"namespace", p.ns}, {"name", p.involved.value("name", "")}, {"reason", p.reason}});
    return;
  }
  ++stats_.created;
  if (series_.size() >= options_.max_tracked) series_.clear();
  series_[series_key] = {name, p.ns, 1, now};
}

}  // namespace kiln::runtime
