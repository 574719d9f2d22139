// Controller: connects informers to a Reconciler through a WorkQueue served by
// N workers. Every add, update or delete of an object seen through `For`
// enqueues its own key; through `Owns`, its controlling owner's key; through
// `Watches`, whatever keys the mapping function returns. A key is never
// reconciled by two workers at once. Results decide what happens next:
// success forgets the key's failures (and requeues after Result.requeue_after
// if set), a retryable error requeues with backoff, a terminal error does not.
// A reconciler that throws is treated as returning a retryable error.
// Each reconcile gets a Context that is stopped by Stop (and has a deadline
// when ControllerOptions.reconcile_timeout is set); what a reconcile returns
// after Stop is counted as cancelled, never as an error, and not retried.
// With a Metrics, reconciles and the queue are exported (see metrics.h); failed
// reconciles are logged as JSON with the controller and the object's
// namespace/name. Thread-safe; register watches before Start; Start once,
// Stop to cancel, drain and join.
#ifndef KILN_RUNTIME_CONTROLLER_H_
#define KILN_RUNTIME_CONTROLLER_H_

#include <atomic>
#include <functional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "kube/informer.h"
#include "kube/resource.h"
#include "runtime/metrics.h"
#include "runtime/reconcile.h"
#include "runtime/work_queue.h"

namespace kiln::runtime {

struct ControllerOptions {
  int workers = 1;
  WorkQueueOptions queue;
  // Deadline of each reconcile's Context; 0: none (only Stop ends it).
  std::chrono::milliseconds reconcile_timeout{0};
};

struct ControllerStats {
  int64_t reconciles = 0;
  int64_t errors = 0;
  int64_t terminal_errors = 0;
  int64_t requeues_after = 0;
  int64_t cancelled = 0;  // Failed after Stop: neither errors nor retried.
};

// Maps a changed object to the requests to reconcile (possibly none). Runs on
// the informer's thread: it must be quick and must not block. One that throws
// loses that event (logged).
using MapFunc = std::function<std::vector<Request>(const kube::Object&)>;

// The mapping `Owns` uses: the controlling owner (the ownerReference with
// controller: true) if it is of `owner`'s group and kind, in the object's
// namespace. Owner references never cross namespaces or clusters.
MapFunc MapToControllingOwner(const kube::Resource& owner);

class Controller {
 public:
  // `metrics`, if given, must outlive the controller.
  Controller(std::string name, Reconciler& reconciler, ControllerOptions options = {},
             Metrics* metrics = nullptr);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Reconciles the objects `informer` sees (the primary resource).
  void For(kube::Informer& informer);
  // Reconciles the controlling owner, of kind `owner`, of the objects
  // `informer` sees; an object whose controller changes wakes both owners.
  void Owns(kube::Informer& informer, const kube::Resource& owner);
  // Reconciles what `map` returns for the objects `informer` sees (on an
  // update, for the old and the new object). `informer` may watch any
  // cluster; the keys are exactly the mapping's requests.
  void Watches(kube::Informer& informer, MapFunc map);

  // Starts the workers; call after the informers have synced.
  void Start();
  // Stops every reconcile's Context and the queue without waiting (so a
  // manager can stop all its controllers at once before joining each).
  void RequestStop();
  // RequestStop, then: stops taking work (queued keys are
  // dropped: the next leader re-lists), lets in-flight reconciles return and
  // joins the workers.
  void Stop();

  const std::string& name() const { return name_; }
  WorkQueue& queue() { return queue_; }
  ControllerStats stats() const;

 private:
  void Work();
  void Finish(const std::string& key, const Request& request, const StatusOr<Result>& result,
              bool cancelled);
  WorkQueueOptions Instrumented(WorkQueueOptions options, Metrics* metrics);

  const std::string name_;
  Reconciler& reconciler_;
  const ControllerOptions options_;
  ControllerMetrics* const metrics_;  // Null without a Metrics.
  const log::Logger log_;
  // The Metrics reading queue_'s depth (set while queue_ is built, so it is
  // declared before it); the destructor tells it the queue is going.
  Metrics* depth_metrics_ = nullptr;
  WorkQueue queue_;
  std::stop_source stop_;
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  ControllerStats stats_;  // Guarded by mu_.
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_CONTROLLER_H_
