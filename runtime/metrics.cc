#include "runtime/metrics.h"

#include <prometheus/text_serializer.h>

namespace kiln::runtime {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

const Histogram::BucketBoundaries& ReconcileBuckets() {
  static const Histogram::BucketBoundaries b = {
      0.005, 0.01, 0.025, 0.05, 0.1,  0.15, 0.2,  0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6,
      0.7,   0.8,  0.9,   1.0,  1.25, 1.5,  1.75, 2.0,  2.5, 3.0,  3.5, 4.0,  4.5, 5,
      6,     7,    8,     9,    10,   15,   20,   25,   30,  40,   50,  60};
  return b;
}

const Histogram::BucketBoundaries& QueueBuckets() {  // 10ns .. 1000s, as client-go.
  static const Histogram::BucketBoundaries b = {1e-8, 1e-7, 1e-6, 1e-5, 1e-4,
                                                1e-3, 1e-2, 1e-1, 1,    10};
  return b;
}

const Histogram::BucketBoundaries& RequestBuckets() {
  static const Histogram::BucketBoundaries b = {0.005, 0.025, 0.1, 0.25, 0.5, 1,
                                                2,     4,     8,   15,   30,  60};
  return b;
}

double Seconds(Clock::Duration d) { return std::chrono::duration<double>(d).count(); }

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

}  // namespace

class Metrics::QueueObserver : public WorkQueueObserver {
 public:
  QueueObserver(Metrics& m, const std::string& name, std::function<size_t()> depth)
      : adds_(m.queue_adds_.Add({{"name", name}})),
        retries_(m.queue_retries_.Add({{"name", name}})),
        queued_(m.queue_duration_.Add({{"name", name}}, QueueBuckets())),
        work_(m.work_duration_.Add({{"name", name}}, QueueBuckets())),
        depth_(std::move(depth)) {}

  void OnAdd() override { adds_.Increment(); }
  void OnRetry() override { retries_.Increment(); }
  void OnStart(Clock::Duration queued) override { queued_.Observe(Seconds(queued)); }
  void OnDone(Clock::Duration processing) override { work_.Observe(Seconds(processing)); }
  // Depth and SetDepth are called with the Metrics' mu_ held.
  size_t Depth() const { return depth_ ? depth_() : 0; }
  void SetDepth(std::function<size_t()> depth, const void* owner) {
    depth_ = std::move(depth);
    owner_ = owner;
  }
  const void* owner() const { return owner_; }

 private:
  prometheus::Counter& adds_;
  prometheus::Counter& retries_;
  prometheus::Histogram& queued_;
  prometheus::Histogram& work_;
  std::function<size_t()> depth_;
  const void* owner_ = nullptr;
};

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      reconcile_total_(BuildCounter()
                           .Name("controller_runtime_reconcile_total")
                           .Help("Total number of reconciliations per controller")
                           .Register(*registry_)),
      reconcile_errors_(BuildCounter()
                            .Name("controller_runtime_reconcile_errors_total")
                            .Help("Total number of reconciliation errors per controller")
                            .Register(*registry_)),
      terminal_errors_(BuildCounter()
                           .Name("controller_runtime_terminal_reconcile_errors_total")
                           .Help("Total number of terminal reconciliation errors per controller")
                           .Register(*registry_)),
      reconcile_time_(BuildHistogram()
                          .Name("controller_runtime_reconcile_time_seconds")
                          .Help("Length of time per reconciliation per controller")
                          .Register(*registry_)),
      active_workers_(BuildGauge()
                          .Name("controller_runtime_active_workers")
                          .Help("Number of currently used workers per controller")
                          .Register(*registry_)),
      max_concurrent_(BuildGauge()
                          .Name("controller_runtime_max_concurrent_reconciles")
                          .Help("Maximum number of concurrent reconciles per controller")
                          .Register(*registry_)),
      queue_adds_(BuildCounter()
                      .Name("workqueue_adds_total")
                      .Help("Total number of adds handled by workqueue")
                      .Register(*registry_)),
      queue_retries_(BuildCounter()
                         .Name("workqueue_retries_total")
                         .Help("Total number of retries handled by workqueue")
                         .Register(*registry_)),
      queue_duration_(BuildHistogram()
                          .Name("workqueue_queue_duration_seconds")
                          .Help("How long in seconds an item stays in workqueue before being "
                                "requested")
                          .Register(*registry_)),
      work_duration_(BuildHistogram()
                         .Name("workqueue_work_duration_seconds")
                         .Help("How long in seconds processing an item from workqueue takes")
                         .Register(*registry_)),
      requests_total_(BuildCounter()
                          .Name("rest_client_requests_total")
                          .Help("Number of HTTP requests, partitioned by status code, method, "
                                "and host")
                          .Register(*registry_)),
      request_duration_(BuildHistogram()
                            .Name("rest_client_request_duration_seconds")
                            .Help("Request latency in seconds, broken down by verb, code and host")
                            .Register(*registry_)),
      leader_(BuildGauge()
                  .Name("leader_election_master_status")
                  .Help("Gauge of if the reporting system is master of the relevant lease, 0 "
                        "indicates backup, 1 indicates master. 'name' is the string used to "
                        "identify the lease")
                  .Register(*registry_)) {}

Metrics::~Metrics() = default;

Metrics& Metrics::Global() {
  static Metrics* global = new Metrics();  // Never destroyed: threads may scrape at exit.
  return *global;
}

ControllerMetrics* Metrics::ForController(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = controllers_[name];
  if (!slot) {
    slot = std::make_unique<ControllerMetrics>();
    auto result = [&](const char* r) {
      return &reconcile_total_.Add({{"controller", name}, {"result", r}});
    };
    slot->success = result("success");
    slot->error = result("error");
    slot->terminal_error = result("terminal_error");
    slot->requeue_after = result("requeue_after");
    slot->errors = &reconcile_errors_.Add({{"controller", name}});
    slot->terminal_errors = &terminal_errors_.Add({{"controller", name}});
    slot->time = &reconcile_time_.Add({{"controller", name}}, ReconcileBuckets());
    slot->active_workers = &active_workers_.Add({{"controller", name}});
    slot->max_concurrent = &max_concurrent_.Add({{"controller", name}});
  }
  return slot.get();
}

WorkQueueObserver* Metrics::ForQueue(const std::string& name, std::function<size_t()> depth,
                                     const void* owner) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = queues_[name];
  if (!slot) slot = std::make_unique<QueueObserver>(*this, name, nullptr);
  // A queue of the same name made again (a new controller on the same
  // Metrics) is read from now on, not the one before it.
  slot->SetDepth(std::move(depth), owner);
  return slot.get();
}

void Metrics::ForgetQueueDepth(const std::string& name, const void* owner) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queues_.find(name);
  if (it != queues_.end() && it->second->owner() == owner) it->second->SetDepth(nullptr, nullptr);
}

void Metrics::AddInformer(const std::string& resource, const kube::Informer* informer) {
  std::lock_guard<std::mutex> lock(mu_);
  informers_[resource] = informer;
}

void Metrics::SetLeader(const std::string& name, bool leading) {
  leader_.Add({{"name", name}}).Set(leading ? 1 : 0);
}

void Metrics::ObserveRequest(const kube::RequestRecord& r) {
  std::string code = r.code == 0 ? "<error>" : std::to_string(r.code);
  std::string host(r.host), method(r.method);
  requests_total_.Add({{"host", host}, {"method", method}, {"code", code}}).Increment();
  request_duration_.Add({{"host", host}, {"verb", method}, {"code", code}}, RequestBuckets())
      .Observe(r.latency.count());
}

std::string Metrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  // Values read from their owners at scrape time.
  auto depth =
      Family("workqueue_depth", "Current depth of workqueue", prometheus::MetricType::Gauge);
  auto restarts = Family("kiln_informer_watch_restarts_total",
                         "Watches an informer started after its first (reconnects, rotations)",
                         prometheus::MetricType::Counter);
  auto relists = Family("kiln_informer_relists_total",
                        "Re-lists after the server answered 410 Gone (resourceVersion expired)",
                        prometheus::MetricType::Counter);
  auto events = Family("kiln_informer_events_total", "Watch events an informer received",
                       prometheus::MetricType::Counter);
  auto objects = Family("kiln_informer_objects", "Objects in an informer's cache",
                        prometheus::MetricType::Gauge);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, q] : queues_) {
      prometheus::ClientMetric m;
      m.label = {{"name", name}};
      m.gauge.value = static_cast<double>(q->Depth());
      depth.metric.push_back(m);
    }
    for (const auto& [resource, informer] : informers_) {
      kube::InformerStats s = informer->stats();
      prometheus::ClientMetric m;
      m.label = {{"resource", resource}};
      auto add = [&m](prometheus::MetricFamily& f, double v, bool gauge) {
        (gauge ? m.gauge.value : m.counter.value) = v;
        f.metric.push_back(m);
      };
      add(restarts, static_cast<double>(s.watch_restarts), false);
      add(relists, static_cast<double>(s.relists_after_expiry), false);
      add(events, static_cast<double>(s.events), false);
      add(objects, static_cast<double>(informer->store().size()), true);
    }
  }
  for (auto* f : {&depth, &restarts, &relists, &events, &objects}) {
    if (!f->metric.empty()) families.push_back(std::move(*f));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace kiln::runtime
