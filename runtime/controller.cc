#include "runtime/controller.h"

namespace kiln::runtime {

using kube::Object;

namespace {

// "apps/v1" -> "apps"; "v1" -> "".
std::string GroupOf(const std::string& api_version) {
  auto slash = api_version.find('/');
  return slash == std::string::npos ? "" : api_version.substr(0, slash);
}

}  // namespace

MapFunc MapToControllingOwner(const kube::Resource& owner) {
  return [group = owner.group, kind = owner.kind](const Object& o) {
    std::vector<Request> out;
    auto md = o->find("metadata");
    if (md == o->end() || !md->is_object()) return out;
    auto refs = md->find("ownerReferences");
    if (refs == md->end() || !refs->is_array()) return out;
    for (const auto& ref : *refs) {
      if (!ref.is_object() || !ref.value("controller", false) || ref.value("kind", "") != kind ||
          GroupOf(ref.value("apiVersion", "")) != group) {
        continue;
      }
      auto ns = md->find("namespace");
      out.push_back({ns != md->end() && ns->is_string() ? ns->get<std::string>() : "",
                     ref.value("name", "")});
    }
    return out;
  };
}

Controller::Controller(std::string name, Reconciler& reconciler, ControllerOptions options,
                       Metrics* metrics)
    : name_(std::move(name)),
      reconciler_(reconciler),
      options_(std::move(options)),
      metrics_(metrics != nullptr ? metrics->ForController(name_) : nullptr),
      log_(log::Logger("controller").WithValues({{"controller", name_}})),
      queue_(Instrumented(options_.queue, metrics)) {
  if (metrics_ != nullptr) metrics_->max_concurrent->Set(options_.workers);
}

WorkQueueOptions Controller::Instrumented(WorkQueueOptions options, Metrics* metrics) {
  if (metrics != nullptr && options.observer == nullptr) {
    // The depth is read at scrape time, when queue_ exists.
    options.observer = metrics->ForQueue(
        name_, [this] { return queue_.Len(); }, this);
    depth_metrics_ = metrics;
  }
  return options;
}

Controller::~Controller() {
  Stop();
  // A scrape after this must not read the queue that is about to go.
  if (depth_metrics_ != nullptr) depth_metrics_->ForgetQueueDepth(name_, this);
}

void Controller::For(kube::Informer& informer) {
  Watches(informer, [](const Object& o) {
    return std::vector<Request>{Request::FromKey(kube::Store::KeyOf(*o))};
  });
}

void Controller::Owns(kube::Informer& informer, const kube::Resource& owner) {
  Watches(informer, MapToControllingOwner(owner));
}

void Controller::Watches(kube::Informer& informer, MapFunc map) {
  auto enqueue = [this, map = std::move(map)](const Object& o) {
    std::vector<Request> requests;
    try {
      requests = map(o);
    } catch (const std::exception& e) {
      // A throwing mapping is a bug; on the informer's thread it would end
      // the process, so it costs this one event instead.
      log_.Error(Status::Internal(e.what()), "watch mapping threw; event dropped",
                 {{"object", kube::Store::KeyOf(*o)}});
      return;
    }
    for (const auto& request : requests) queue_.Add(request.Key());
  };
  informer.AddHandlers({.on_add = enqueue,
                        .on_update =
                            [enqueue](const Object& old, const Object& now) {
                              enqueue(old);  // A change of mapping wakes both sides.
                              enqueue(now);
                            },
                        .on_delete = enqueue});
}

void Controller::Start() {
  for (int i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { Work(); });
}

void Controller::RequestStop() {
  stop_.request_stop();
  queue_.ShutDown();
}

void Controller::Stop() {
  RequestStop();
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
    if (stop_.stop_requested()) {
      queue_.Done(*key);  // Draining after Stop: the work is dropped, not done.
      continue;
    }
    Context ctx(stop_.get_token(), std::nullopt);
    if (options_.reconcile_timeout.count() > 0) ctx = ctx.WithTimeout(options_.reconcile_timeout);
    StatusOr<Result> result = Status::Internal("not reconciled");
    const Request request = Request::FromKey(*key);
    if (metrics_ != nullptr) metrics_->active_workers->Increment();
    const auto start = std::chrono::steady_clock::now();
    try {
      // Bounds every API call the reconciler makes (kube::Client reads it).
      ScopedContext scope(ctx);
      result = reconciler_.Reconcile(ctx, request);
    } catch (const std::exception& e) {
      // A throwing reconciler is a bug, but one object must not take the whole
      // operator down: record it and retry with backoff.
      result = Status::Internal(name_ + ": reconciler threw for " + *key + ": " + e.what());
    }
    if (metrics_ != nullptr) {
      metrics_->active_workers->Decrement();
      metrics_->time->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    Finish(*key, request, result, !result.ok() && ctx.stopped());
    queue_.Done(*key);
  }
}

void Controller::Finish(const std::string& key, const Request& request,
                        const StatusOr<Result>& result, bool cancelled) {
  const bool terminal = !result.ok() && IsTerminal(result.status());
  if (metrics_ != nullptr && !cancelled) {
    if (!result.ok()) {
      (terminal ? metrics_->terminal_error : metrics_->error)->Increment();
      (terminal ? metrics_->terminal_errors : metrics_->errors)->Increment();
    } else {
      (result->requeue_after.count() > 0 ? metrics_->requeue_after : metrics_->success)
          ->Increment();
    }
  }
  if (!result.ok() && !cancelled) {
    log_.Error(result.status(),
               terminal ? "reconcile failed, not retrying" : "reconcile failed, will retry",
               {{"namespace", request.ns}, {"name", request.name}, {"key", key}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.reconciles;
    if (cancelled) {
      ++stats_.cancelled;
    } else if (!result.ok()) {
      ++(terminal ? stats_.terminal_errors : stats_.errors);
    } else if (result->requeue_after.count() > 0) {
      ++stats_.requeues_after;
    }
  }
  if (cancelled) return;  // The queue is shutting down; the next leader re-lists.
  if (result.ok()) {
    queue_.Forget(key);
    if (result->requeue_after.count() > 0) queue_.AddAfter(key, result->requeue_after);
  } else if (terminal) {
    queue_.Forget(key);
  } else {
    queue_.AddRateLimited(key);
  }
}

}  // namespace kiln::runtime
