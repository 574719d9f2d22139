// MemberRoutersMetricsSource: the rollout analysis's router metrics for a
// ModelDeployment served in member clusters, from every ready kiln-router
// replica of each. Every member runs the same chart, so its router Service
// has the same namespace and name (RouterReplicasOptions); the hub usually
// cannot reach a member's pod IPs, so each replica is asked through that
// member's API server pod proxy (RouterReplicasMetricsSource with
// through_api_server). The members are read in parallel and all their
// summaries merged, so the figures are those of one router that saw every
// request in every cluster.
//
// A member that is not connected, has no ready replica, or has a replica
// that does not answer fails the whole measurement (an error naming the
// cluster and the replica, which the analysis counts Inconclusive): part of
// the traffic would be unknown. Holds no state between measurements, so it
// is cheap to build one per reconcile for the clusters a deployment serves
// in. Thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_MEMBER_ROUTERS_SOURCE_H_
#define KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_MEMBER_ROUTERS_SOURCE_H_

#include <string>
#include <vector>

#include "base/statusor.h"
#include "operator/controllers/modeldeployment/metrics_source.h"
#include "operator/controllers/modeldeployment/router_replicas_source.h"
#include "operator/fleet/members.h"
#include "router/window_summary.h"

namespace kiln::modeldeployment {

class MemberRoutersMetricsSource final : public MetricsSource {
 public:
  // Reads the routers of `clusters` (MemberCluster names; each taken once)
  // in `members`, which must outlive this. `options` names the router
  // Service as in every member; through_api_server is implied.
  MemberRoutersMetricsSource(fleet::Members& members, std::vector<std::string> clusters,
                             RouterReplicasOptions options);
  MemberRoutersMetricsSource(const MemberRoutersMetricsSource&) = delete;
  MemberRoutersMetricsSource& operator=(const MemberRoutersMetricsSource&) = delete;

  // The summaries of every ready replica in every cluster, merged.
  // Unavailable when there is no cluster, or naming each cluster that is not
  // connected or whose routers cannot all be read (with
  // RouterReplicasMetricsSource::Summary's error, which names the replica).
  StatusOr<router::WindowSummary> Summary(int window_seconds);

  // TrafficWindowOf(Summary(window_seconds), route).
  StatusOr<TrafficWindow> Window(const std::string& route, int window_seconds) override;

 private:
  // One cluster's merged summary.
  StatusOr<router::WindowSummary> SummaryOf(const std::string& cluster, int window_seconds);

  fleet::Members& members_;
  const std::vector<std::string> clusters_;  // Sorted, unique.
  const RouterReplicasOptions options_;
};

}  // namespace kiln::modeldeployment

#endif  // KILN_OPERATOR_CONTROLLERS_MODELDEPLOYMENT_MEMBER_ROUTERS_SOURCE_H_
