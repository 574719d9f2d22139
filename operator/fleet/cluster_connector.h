// ClusterConnector: the production Connector. Each Member it makes holds a
// kube::Client for the cluster, a second client for heartbeats (no retries,
// so a probe fails within its timeout), and two informers — every node, and
// every non-terminal pod — whose events feed the CapacityView under the
// member's name. Thread-safe.
#ifndef KILN_OPERATOR_FLEET_CLUSTER_CONNECTOR_H_
#define KILN_OPERATOR_FLEET_CLUSTER_CONNECTOR_H_

#include <memory>
#include <string>

#include "kube/client.h"
#include "operator/fleet/capacity_view.h"
#include "operator/fleet/member.h"

namespace kiln::fleet {

class ClusterConnector final : public Connector {
 public:
  // `view` must outlive every Member made. `client_options` apply to each
  // member's main client (its observer reports requests to metrics).
  ClusterConnector(CapacityView& view, kube::ClientOptions client_options = {});

  StatusOr<std::shared_ptr<Member>> Connect(const std::string& name,
                                            const kube::RestConfig& config) override;

 private:
  CapacityView& view_;
  const kube::ClientOptions client_options_;
};

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_CLUSTER_CONNECTOR_H_
