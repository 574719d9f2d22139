// ClusterConnector: the production Connector. Each Member it makes holds a
// kube::Client for the cluster, a second client for heartbeats (no retries,
// so a probe fails within its timeout), and two informers — every node, and
// every non-terminal pod, each cut down to what the fleet reads
// (NodeAsWatched, PodAsWatched) — whose events feed the CapacityView under the
// member's name; the events of kiln's own pods (managed-by kiln) also go to
// the pod listeners, so controllers react to their workers at once, and so
// do kiln's pods on a node that stops being Ready or is deleted (their own
// events may come minutes later, or never).
// Thread-safe.
#ifndef KILN_OPERATOR_FLEET_CLUSTER_CONNECTOR_H_
#define KILN_OPERATOR_FLEET_CLUSTER_CONNECTOR_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kube/client.h"
#include "operator/fleet/capacity_view.h"
#include "operator/fleet/member.h"

namespace kiln::fleet {

// Called with the member cluster's name and a kiln pod that was added,
// changed, deleted or ended (left the non-terminal set), on the informer's
// thread: it must be quick and must not block.
using PodListener = std::function<void(const std::string& cluster, const kube::json& pod)>;

class ClusterConnector final : public Connector {
 public:
  // `view` must outlive every Member made. `client_options` apply to each
  // member's main client (its observer reports requests to metrics).
  ClusterConnector(CapacityView& view, kube::ClientOptions client_options = {});

  StatusOr<std::shared_ptr<Member>> Connect(const std::string& name,
                                            const kube::RestConfig& config) override;

  // Adds a listener for every member's kiln pods, those connected already
  // included.
  void AddPodListener(PodListener listener);

  struct Listeners {
    std::mutex mu;
    std::vector<PodListener> all;  // Guarded by mu.
  };

 private:
  CapacityView& view_;
  const kube::ClientOptions client_options_;
  const std::shared_ptr<Listeners> listeners_ = std::make_shared<Listeners>();
};

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_CLUSTER_CONNECTOR_H_
