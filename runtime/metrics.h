// Metrics: the operator's Prometheus metrics, named as controller-runtime and
// client-go name theirs so existing dashboards and alerts work unchanged:
//   controller_runtime_reconcile_total{controller,result}
//   controller_runtime_reconcile_errors_total{controller}
//   controller_runtime_terminal_reconcile_errors_total{controller}
//   controller_runtime_reconcile_time_seconds{controller}         (histogram)
//   controller_runtime_active_workers{controller}
//   controller_runtime_max_concurrent_reconciles{controller}
//   workqueue_depth{name}, workqueue_adds_total{name}, workqueue_retries_total{name}
//   workqueue_queue_duration_seconds{name}, workqueue_work_duration_seconds{name}
//   rest_client_requests_total{host,method,code}
//   rest_client_request_duration_seconds{host,verb,code}           (histogram)
//   kiln_informer_watch_restarts_total{resource}, kiln_informer_relists_total{resource},
//   kiln_informer_events_total{resource}, kiln_informer_objects{resource}
//   leader_election_master_status{name}
// Metrics owns a prometheus::Registry; `Scrape` renders the text exposition.
// Thread-safe.
#ifndef KILN_RUNTIME_METRICS_H_
#define KILN_RUNTIME_METRICS_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "kube/informer.h"
#include "kube/request_observer.h"
#include "runtime/work_queue.h"

namespace kiln::runtime {

// One controller's reconcile instruments.
struct ControllerMetrics {
  prometheus::Counter* success = nullptr;
  prometheus::Counter* error = nullptr;
  prometheus::Counter* terminal_error = nullptr;
  prometheus::Counter* requeue_after = nullptr;
  prometheus::Counter* errors = nullptr;           // reconcile_errors_total
  prometheus::Counter* terminal_errors = nullptr;  // terminal_reconcile_errors_total
  prometheus::Histogram* time = nullptr;
  prometheus::Gauge* active_workers = nullptr;
  prometheus::Gauge* max_concurrent = nullptr;
};

class Metrics : public kube::RequestObserver {
 public:
  Metrics();
  ~Metrics() override;
  // The process-wide instance, for clients and managers that share one
  // /metrics endpoint (like controller-runtime's metrics.Registry).
  static Metrics& Global();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  prometheus::Registry& registry() { return *registry_; }

  // Instruments for one controller / one queue; stable for the Metrics' life.
  ControllerMetrics* ForController(const std::string& name);
  // An observer for the queue `name`; `depth` is read at scrape time until
  // ForgetQueueDepth(name, owner) (the queue's owner calls it before the
  // queue goes; a later ForQueue of the same name replaces both).
  WorkQueueObserver* ForQueue(const std::string& name, std::function<size_t()> depth,
                              const void* owner = nullptr);
  // Stops reading the depth of queue `name` if `owner` registered it last;
  // the queue then reports depth 0. Its counters stay.
  void ForgetQueueDepth(const std::string& name, const void* owner);
  // Informer counters, read at scrape time; the informer must outlive the
  // Metrics or be removed first.
  void AddInformer(const std::string& resource, const kube::Informer* informer);
  void SetLeader(const std::string& name, bool leading);

  void ObserveRequest(const kube::RequestRecord& record) override;

  // Prometheus text exposition format 0.0.4.
  std::string Scrape() const;

 private:
  class QueueObserver;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& reconcile_total_;
  prometheus::Family<prometheus::Counter>& reconcile_errors_;
  prometheus::Family<prometheus::Counter>& terminal_errors_;
  prometheus::Family<prometheus::Histogram>& reconcile_time_;
  prometheus::Family<prometheus::Gauge>& active_workers_;
  prometheus::Family<prometheus::Gauge>& max_concurrent_;
  prometheus::Family<prometheus::Counter>& queue_adds_;
  prometheus::Family<prometheus::Counter>& queue_retries_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& work_duration_;
  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Gauge>& leader_;

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<ControllerMetrics>> controllers_;  // Guarded by mu_.
  std::map<std::string, std::unique_ptr<QueueObserver>> queues_;           // Guarded by mu_.
  std::map<std::string, const kube::Informer*> informers_;                 // Guarded by mu_.
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_METRICS_H_
