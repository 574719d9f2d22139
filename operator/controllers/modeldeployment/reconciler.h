// ModelDeploymentReconciler: from a ModelDeployment to the serving pods of
// its live versions and the traffic split kiln-router obeys
// (status.traffic), moving a new version in by the declared canary steps and
// out again when its analysis fails. Level-based and idempotent: the
// rollout's whole state (versions and their checkpoints, step, when the step
// began, analysis runs, the handled rollout.action) lives in the status, so
// a restarted or newly elected operator resumes where the last one stopped.
//
// One reconcile:
//  1. Reads the ModelDeployment and its versions' Deployments (ready
//     replicas; for a version not fully ready, why its pods are not
//     (pod_trouble.h), for the status message), in each cluster it serves
//     in (below). In its own cluster a deleted one needs nothing: its
//     Deployments and Services carry owner references and are
//     garbage-collected.
//  2. Decides the new status:
//     - the first version is the stable one; it gets 100% of the traffic
//       once its Deployment has a ready replica;
//     - spec.rollout.action acts once, when it changes (status.handledAction):
//       Promote skips the remaining steps, Abort returns all traffic to the
//       stable version and stops the canary, Rollback returns to the warm
//       previous version at once (no steps), Continue lets a stopped version
//       be rolled out again;
//     - a new spec.model.version starts a canary at step 0. With
//       analysis.qualityGate, a Job scores the canary against the stable
//       version first (quality_gate.h); a canary worse by more than
//       maxRegression is stopped before it takes any traffic. setWeight gives
//       the canary its weight only once it has the ready replicas that
//       weight needs (never weight on a version with no ready pod); pause
//       waits its duration, or for Promote; analysis measures the canary
//       (analysis.h: kiln-router's window through MetricsSource, PromQL
//       through PrometheusSource) every interval for its duration, or with
//       background: true from then on through the later steps, until the
//       promotion or its failure (status.backgroundAnalysis names the run);
//       a qualityGate step runs the gate's Job again, holding the weight. After
//       the last step the canary is scaled to spec.replicas and, once ready,
//       promoted: 100% of the traffic, the old stable version kept warm as
//       the previous one for scaleDownDelay;
//     - a failed analysis (blocking or background) or step gate sends all
//       traffic to the stable version at once
//       (phase Degraded, the failing metric and value in the message, an
//       Event, status.rollbacks + 1).
//  3. Writes the status (weights first) and, with traffic.provider
//     GatewayAPI, the weights into the HTTPRoute's backendRefs
//     (gateway_route.h); then makes the Deployments and
//     Services match it: a Deployment and a Service per live version
//     (version_workload.h), the canary sized by its next weight so it is
//     scaled up before it takes traffic, and deletes those of versions no
//     longer live (so nothing is scaled down before its weight is gone),
//     scale_down_grace after they lost their weight.
// Where the versions run: the ModelDeployment's own cluster, or with a
// non-empty spec.clusterSelector every member cluster whose MemberCluster
// matches it (status.clusters):
//  - Serving: matches and is Ready (connected). Every live version runs
//    there with the replicas it would have alone (each member is a whole
//    copy, routing its own traffic by the one status.traffic through its own
//    kiln-router), and a version counts as ready only as far as it is ready
//    in every Serving member, so no member's router is sent to a version it
//    has no pod of. What runs there carries the deployment's UID as a
//    label; kiln's copy of the S3 credentials Secret too.
//  - Unreachable: matches but is not Ready: left as it is, not waited for.
//  - Leaving: no longer matches (or its MemberCluster is gone): what kiln
//    made there is deleted, then the entry goes.
// The operator's own cluster, when it is not a Serving member, keeps
// nothing. A deployment that is gone is swept from every connected member
// (its reconcile finds it NotFound; a member's pod events wake it, so a
// member that comes back is swept too). The quality gate's Jobs run in the
// deployment's own cluster. Thread-safe: the controller never reconciles one
// object on two workers at once, and the reconciler keeps no state of its
// own.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_RECONCILER_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_RECONCILER_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kube/client.h"
#include "operator/controllers/modeldeployment/metrics.h"
#include "operator/controllers/modeldeployment/metrics_source.h"
#include "operator/controllers/modeldeployment/prometheus_source.h"
#include "operator/controllers/trainingjob/worker_pods.h"
#include "operator/fleet/members.h"
#include "runtime/event_recorder.h"
#include "runtime/reconcile.h"

namespace kiln::modeldeployment {

struct ModelDeploymentReconcilerOptions {
  // Where file:// model URIs lie (none configured: the path is used as is).
  trainingjob::SharedVolume volume;
  // The router's per-version windows for analysis; none makes every router
  // measurement Inconclusive. Must outlive the reconciler.
  MetricsSource* metrics_source = nullptr;
  // Answers the analysis's `prometheus` metrics; none makes them
  // Inconclusive. Must outlive the reconciler.
  PrometheusSource* prometheus_source = nullptr;
  // Where the controller's metrics go (metrics.h); none keeps no metrics.
  // Must outlive the reconciler.
  ModelDeploymentMetrics* metrics = nullptr;
  // The member clusters a deployment with spec.clusterSelector serves in;
  // none (an operator without the fleet) leaves such a deployment unserved,
  // saying why. Must outlive the reconciler.
  fleet::Members* members = nullptr;
  // The MemberCluster that is the operator's own cluster, if any: serving
  // there goes through the deployment's own client, with owner references.
  std::string hub_member;
  // The router windows of the member clusters named (their kiln-router
  // replicas), for a deployment served there; none makes those measurements
  // Inconclusive.
  std::function<std::unique_ptr<MetricsSource>(const std::vector<std::string>& clusters)>
      member_metrics;
  // How often a deployment waiting for replicas is looked at again (the
  // Deployments' informer also wakes it).
  std::chrono::milliseconds resync{std::chrono::seconds(5)};
  // How long a version that lost its weight (stopped, rolled back from,
  // replaced, past its warm window) keeps its pods after the status said
  // so, so that every router replica has dropped it before they go, unless
  // spec.strategy.canary.drainDelay says. 0 deletes them in the same
  // reconcile.
  std::chrono::milliseconds scale_down_grace{std::chrono::seconds(10)};
  std::function<std::chrono::system_clock::time_point()> now = [] {
    return std::chrono::system_clock::now();
  };
};

class ModelDeploymentReconciler final : public runtime::Reconciler {
 public:
  // `client` (the cluster of the ModelDeployments) and `events` (optional)
  // must outlive the reconciler.
  ModelDeploymentReconciler(kube::Client& client, runtime::EventRecorder* events,
                            ModelDeploymentReconcilerOptions options);

  StatusOr<runtime::Result> Reconcile(const runtime::Context& ctx,
                                      const runtime::Request& request) override;

 private:
  kube::Client& client_;
  runtime::EventRecorder* events_;
  ModelDeploymentReconcilerOptions options_;
};

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_RECONCILER_H_
