#include "operator/runtime/controller.h"

namespace kiln::runtime {

using kube::Object;

Controller::Controller(std::string name, Reconciler& reconciler, int workers,
                       WorkQueueOptions queue_options, Metrics* metrics)
    : name_(std::move(name)),
      reconciler_(reconciler),
      workers_(workers),
      metrics_(metrics != nullptr ? metrics->ForController(name_) : nullptr),
      log_(log::Logger("controller").WithValues({{"controller", name_}})),
      queue_(Instrumented(queue_options, metrics)) {
  if (metrics_ != nullptr) metrics_->max_concurrent->Set(workers_);
}

WorkQueueOptions Controller::Instrumented(WorkQueueOptions options, Metrics* metrics) {
  if (metrics != nullptr && options.observer == nullptr) {
    // The depth is read at scrape time, when queue_ exists.
    options.observer = metrics->ForQueue(name_, [this] { return queue_.Len(); });
  }
  return options;
}

Controller::~Controller() { Stop(); }

void Controller::For(kube::Informer& informer) {
  auto enqueue = [this](const Object& o) { queue_.Add(kube::Store::KeyOf(*o)); };
  informer.AddHandlers({.on_add = enqueue,
                        .on_update = [enqueue](const Object&, const Object& now) { enqueue(now); },
                        .on_delete = enqueue});
}

void Controller::Owns(kube::Informer& informer, const std::string& owner_kind) {
  auto enqueue_owner = [this, owner_kind](const Object& o) {
    const auto& md = (*o)["metadata"];
    if (!md.contains("ownerReferences")) return;
    for (const auto& ref : md["ownerReferences"]) {
      if (ref.value("kind", "") != owner_kind || !ref.value("controller", false)) continue;
      std::string ns = md.value("namespace", "");
      std::string name = ref.value("name", "");
      queue_.Add(ns.empty() ? name : ns + "/" + name);
    }
  };
  informer.AddHandlers({.on_add = enqueue_owner,
                        .on_update =
                            [enqueue_owner](const Object& old, const Object& now) {
                              enqueue_owner(old);  // An ownership change wakes both owners.
                              enqueue_owner(now);
                            },
                        .on_delete = enqueue_owner});
}

void Controller::Start() {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { Work(); });
}

void Controller::Stop() {
  queue_.ShutDown();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

ControllerStats Controller::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Controller::Work() {
  while (auto key = queue_.Get()) {
    StatusOr<Result> result = Status::Internal("not reconciled");
    const Request request = Request::FromKey(*key);
    if (metrics_ != nullptr) metrics_->active_workers->Increment();
    const auto start = std::chrono::steady_clock::now();
    try {
      result = reconciler_.Reconcile(request);
    } catch (const std::exception& e) {
      // A throwing reconciler is a bug, but one object must not take the whole
      // operator down: record it and retry with backoff.
      result = Status::Internal(name_ + ": reconciler threw for " + *key + ": " + e.what());
    }
    if (metrics_ != nullptr) {
      metrics_->active_workers->Decrement();
      metrics_->time->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      if (!result.ok()) {
        bool terminal = IsTerminal(result.status());
        (terminal ? metrics_->terminal_error : metrics_->error)->Increment();
        (terminal ? metrics_->terminal_errors : metrics_->errors)->Increment();
      } else {
        (result->requeue_after.count() > 0 ? metrics_->requeue_after : metrics_->success)
            ->Increment();
      }
    }
    if (!result.ok()) {
      log_.Error(result.status(),
                 IsTerminal(result.status()) ? "reconcile failed, not retrying"
                                             : "reconcile failed, will retry",
                 {{"namespace", request.ns}, {"name", request.name}, {"key", *key}});
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.reconciles;
      if (!result.ok()) ++(IsTerminal(result.status()) ? stats_.terminal_errors : stats_.errors);
      if (result.ok() && result->requeue_after.count() > 0) ++stats_.requeues_after;
    }
    if (result.ok()) {
      queue_.Forget(*key);
      if (result->requeue_after.count() > 0) queue_.AddAfter(*key, result->requeue_after);
    } else if (IsTerminal(result.status())) {
      queue_.Forget(*key);
    } else {
      queue_.AddRateLimited(*key);
    }
    queue_.Done(*key);
  }
}

}  // namespace kiln::runtime
