// TrainingJobMetrics: the TrainingJob controller's Prometheus metrics, in the
// operator's registry (runtime::Metrics, served at /metrics):
//   kiln_trainingjob_jobs{phase}                       gauge: jobs by status.phase
//   kiln_trainingjob_restarts_total{reason}            counter: gang restarts by reason
//   kiln_trainingjob_recovery_seconds                  histogram: a failure detected →
//                                                      the whole gang Running again
//   kiln_trainingjob_node_quarantines_total            counter: nodes quarantined
//   kiln_trainingjob_step{namespace,trainingjob}       gauge: rank 0's last step
//                                                      (rate() of it is steps/s)
//   kiln_trainingjob_tokens_per_second{namespace,trainingjob}  gauge: rank 0's throughput
//   kiln_trainingjob_loss{namespace,trainingjob}       gauge: rank 0's last training loss
// The per-job series exist while the job may progress: a job that finishes,
// is suspended or is deleted loses them. Counts are this process's: a new
// leader starts the counters afresh and learns the phases as it reconciles.
// Thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_TRAININGJOB_METRICS_H_
#define KILN_OPERATOR_CONTROLLERS_TRAININGJOB_METRICS_H_

#include <chrono>
#include <optional>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "runtime/phase_gauge.h"

namespace kiln::trainingjob {

class TrainingJobMetrics {
 public:
  // Registers the families in `registry`, which must outlive this.
  explicit TrainingJobMetrics(prometheus::Registry& registry);
  TrainingJobMetrics(const TrainingJobMetrics&) = delete;
  TrainingJobMetrics& operator=(const TrainingJobMetrics&) = delete;

  // Job `ns`/`name` is now in `phase`; "" when it is gone. Its progress
  // series go when it is gone, finished or suspended.
  void SetPhase(const std::string& ns, const std::string& name, const std::string& phase);
  void CountRestart(const std::string& reason);
  void ObserveRecovery(std::chrono::duration<double> took);
  void CountQuarantine();
  // Rank 0's last progress report; a value it did not report leaves that
  // series as it was.
  void SetProgress(const std::string& ns, const std::string& name, int64_t step,
                   std::optional<double> tokens_per_second, std::optional<double> loss);

 private:
  runtime::PhaseGauge jobs_;  // By namespace/name.
  prometheus::Family<prometheus::Counter>& restarts_;
  prometheus::Histogram& recovery_;
  prometheus::Counter& quarantines_;
  prometheus::Family<prometheus::Gauge>& step_;
  prometheus::Family<prometheus::Gauge>& tokens_;
  prometheus::Family<prometheus::Gauge>& loss_;
};

}  // namespace kiln::trainingjob

#endif  // KILN_OPERATOR_CONTROLLERS_TRAININGJOB_METRICS_H_
