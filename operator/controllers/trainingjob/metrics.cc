#include "operator/controllers/trainingjob/metrics.h"

namespace kiln::trainingjob {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// The promise is under 30 s; a restart waits out its backoff (10 s first by
// default, up to 5 m), so the buckets reach past that.
const prometheus::Histogram::BucketBoundaries& RecoveryBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {1,  2,  5,   10,  15,  20,  30,
                                                            45, 60, 120, 300, 600, 1800};
  return b;
}

}  // namespace

TrainingJobMetrics::TrainingJobMetrics(prometheus::Registry& registry)
    : jobs_(BuildGauge()
                .Name("kiln_trainingjob_jobs")
                .Help("TrainingJobs by status.phase")
                .Register(registry)),
      restarts_(BuildCounter()
                    .Name("kiln_trainingjob_restarts_total")
                    .Help("Whole-gang restarts of TrainingJobs, by classified failure reason")
                    .Register(registry)),
      recovery_(BuildHistogram()
                    .Name("kiln_trainingjob_recovery_seconds")
                    .Help("From a worker failure detected to the whole gang running again")
                    .Register(registry)
                    .Add({}, RecoveryBuckets())),
      quarantines_(BuildCounter()
                       .Name("kiln_trainingjob_node_quarantines_total")
                       .Help("Nodes quarantined after repeated hardware faults")
                       .Register(registry)
                       .Add({})),
      step_(BuildGauge()
                .Name("kiln_trainingjob_step")
                .Help("The last training step rank 0 reported")
                .Register(registry)),
      tokens_(BuildGauge()
                  .Name("kiln_trainingjob_tokens_per_second")
                  .Help("Training throughput rank 0 reported, all workers together")
                  .Register(registry)),
      loss_(BuildGauge()
                .Name("kiln_trainingjob_loss")
                .Help("The training loss rank 0 reported last")
                .Register(registry)) {}

void TrainingJobMetrics::SetPhase(const std::string& ns, const std::string& name,
                                  const std::string& phase) {
  if (!jobs_.Set(ns + "/" + name, phase)) return;
  // A job that is gone, finished or suspended makes no progress: its
  // progress series go rather than standing still (which would read as a
  // stalled job).
  if (phase.empty() || phase == "Succeeded" || phase == "Failed" || phase == "Suspended") {
    const prometheus::Labels labels = {{"namespace", ns}, {"trainingjob", name}};
    if (step_.Has(labels)) step_.Remove(&step_.Add(labels));
    if (tokens_.Has(labels)) tokens_.Remove(&tokens_.Add(labels));
    if (loss_.Has(labels)) loss_.Remove(&loss_.Add(labels));
  }
}

void TrainingJobMetrics::CountRestart(const std::string& reason) {
  restarts_.Add({{"reason", reason}}).Increment();
}

void TrainingJobMetrics::ObserveRecovery(std::chrono::duration<double> took) {
  recovery_.Observe(took.count());
}

void TrainingJobMetrics::CountQuarantine() { quarantines_.Increment(); }

void TrainingJobMetrics::SetProgress(const std::string& ns, const std::string& name, int64_t step,
                                     std::optional<double> tokens_per_second,
                                     std::optional<double> loss) {
  const prometheus::Labels labels = {{"namespace", ns}, {"trainingjob", name}};
  step_.Add(labels).Set(static_cast<double>(step));
  if (tokens_per_second) tokens_.Add(labels).Set(*tokens_per_second);
  if (loss) loss_.Add(labels).Set(*loss);
}

}  // namespace kiln::trainingjob
