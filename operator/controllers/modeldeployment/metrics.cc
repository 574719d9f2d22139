#include "operator/controllers/modeldeployment/metrics.h"

namespace kiln::modeldeployment {

ModelDeploymentMetrics::ModelDeploymentMetrics(prometheus::Registry& registry)
    : deployments_(prometheus::BuildGauge()
                       .Name("kiln_modeldeployment_deployments")
                       .Help("ModelDeployments by status.phase")
                       .Register(registry)),
      rollbacks_(prometheus::BuildCounter()
                     .Name("kiln_modeldeployment_rollbacks_total")
                     .Help("Rollbacks of a ModelDeployment (a failed analysis or quality gate, "
                           "or rollout.action Rollback), as written to its status")
                     .Register(registry)) {}

void ModelDeploymentMetrics::SetPhase(const std::string& ns, const std::string& name,
                                      const std::string& phase) {
  if (!deployments_.Set(ns + "/" + name, phase) || !phase.empty()) return;
  const prometheus::Labels labels = {{"namespace", ns}, {"modeldeployment", name}};
  if (rollbacks_.Has(labels)) rollbacks_.Remove(&rollbacks_.Add(labels));
}

void ModelDeploymentMetrics::CountRollbacks(const std::string& ns, const std::string& name,
                                            int count) {
  if (count <= 0) return;
  rollbacks_.Add({{"namespace", ns}, {"modeldeployment", name}}).Increment(count);
}

}  // namespace kiln::modeldeployment
