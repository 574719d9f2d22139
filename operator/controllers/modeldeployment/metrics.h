// ModelDeploymentMetrics: the ModelDeployment controller's Prometheus metrics,
// in the operator's registry (runtime::Metrics, served at /metrics):
//   kiln_modeldeployment_deployments{phase}      gauge: deployments by status.phase
//   kiln_modeldeployment_rollbacks_total{namespace,modeldeployment}
//                                                counter: rollbacks (automatic and
//                                                requested) written to the status
// Counts are this process's: a new leader starts the counters afresh and
// learns the phases as it reconciles. Thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_METRICS_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_METRICS_H_

#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "runtime/phase_gauge.h"

namespace kiln::modeldeployment {

class ModelDeploymentMetrics {
 public:
  // Registers the families in `registry`, which must outlive this.
  explicit ModelDeploymentMetrics(prometheus::Registry& registry);
  ModelDeploymentMetrics(const ModelDeploymentMetrics&) = delete;
  ModelDeploymentMetrics& operator=(const ModelDeploymentMetrics&) = delete;

  // Deployment `ns`/`name` is now in `phase`; "" when it is gone (its
  // rollback series goes too).
  void SetPhase(const std::string& ns, const std::string& name, const std::string& phase);
  // `count` more rollbacks of `ns`/`name` were written to its status.
  void CountRollbacks(const std::string& ns, const std::string& name, int count);

 private:
  runtime::PhaseGauge deployments_;  // By namespace/name.
  prometheus::Family<prometheus::Counter>& rollbacks_;
};

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_METRICS_H_
