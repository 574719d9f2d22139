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
  std::lock_guard<std::mutex> lock(mu_);
  const std::string key = ns + "/" + name;
  auto it = phases_.find(key);
  const std::string old = it == phases_.end() ? "" : it->second;
  if (old == phase) return;
  if (!old.empty()) deployments_.Add({{"phase", old}}).Decrement();
  if (phase.empty()) {
    phases_.erase(key);
    const prometheus::Labels labels = {{"namespace", ns}, {"modeldeployment", name}};
    if (rollbacks_.Has(labels)) rollbacks_.Remove(&rollbacks_.Add(labels));
    return;
  }
  phases_[key] = phase;
  deployments_.Add({{"phase", phase}}).Increment();
}

void ModelDeploymentMetrics::CountRollbacks(const std::string& ns, const std::string& name,
                                            int count) {
  if (count <= 0) return;
  rollbacks_.Add({{"namespace", ns}, {"modeldeployment", name}}).Increment(count);
}

}  // namespace kiln::modeldeployment
