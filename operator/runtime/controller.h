// Controller: connects informers to a Reconciler through a WorkQueue served by
// N workers. Every add, update or delete of a watched object (and, through
// `Watches`, of objects it owns) enqueues the owner's key; a key is never
// reconciled by two workers at once. Results decide what happens next:
// success forgets the key's failures (and requeues after Result.requeue_after
// if set), a retryable error requeues with backoff, a terminal error does not.
// A reconciler that throws is treated as returning a retryable error.
// With a Metrics, reconciles and the queue are exported (see metrics.h); failed
// reconciles are logged as JSON with the controller and the object's
// namespace/name. Thread-safe; Start once, Stop to drain and join.
#ifndef KILN_OPERATOR_RUNTIME_CONTROLLER_H_
#define KILN_OPERATOR_RUNTIME_CONTROLLER_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "operator/kube/informer.h"
#include "operator/runtime/metrics.h"
#include "operator/runtime/reconcile.h"
#include "operator/runtime/work_queue.h"

namespace kiln::runtime {

struct ControllerStats {
  int64_t reconciles = 0;
  int64_t errors = 0;
  int64_t terminal_errors = 0;
  int64_t requeues_after = 0;
};

class Controller {
 public:
  // `metrics`, if given, must outlive the controller.
  Controller(std::string name, Reconciler& reconciler, int workers = 1,
             WorkQueueOptions queue_options = {}, Metrics* metrics = nullptr);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Reconciles the objects `informer` sees (the primary resource).
  void For(kube::Informer& informer);
  // Reconciles the owner (an ownerReference of `owner_kind`) of the objects
  // `informer` sees.
  void Owns(kube::Informer& informer, const std::string& owner_kind);

  // Starts the workers; call after the informers have synced.
  void Start();
  // Stops taking work, lets in-flight reconciles finish, joins the workers.
  void Stop();

  const std::string& name() const { return name_; }
  WorkQueue& queue() { return queue_; }
  ControllerStats stats() const;

 private:
  void Work();
  WorkQueueOptions Instrumented(WorkQueueOptions options, Metrics* metrics);

  const std::string name_;
  Reconciler& reconciler_;
  const int workers_;
  ControllerMetrics* const metrics_;  // Null without a Metrics.
  const log::Logger log_;
  WorkQueue queue_;
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  ControllerStats stats_;  // Guarded by mu_.
};

}  // namespace kiln::runtime

#endif  // KILN_OPERATOR_RUNTIME_CONTROLLER_H_
