// Fleet: the MemberCluster controller wired into a Manager — the hub's
// MemberCluster and Secret informers, the member registry, the capacity view
// and the reconciler — and what other controllers read: members() for a
// member's client and caches, capacity() for placement's snapshot.
// Set up before Manager::Run, from one thread; the accessors are thread-safe.
#ifndef KILN_OPERATOR_FLEET_FLEET_H_
#define KILN_OPERATOR_FLEET_FLEET_H_

#include <memory>
#include <string>

#include "base/statusor.h"
#include "kube/client.h"
#include "operator/fleet/capacity_view.h"
#include "operator/fleet/cluster_connector.h"
#include "operator/fleet/membercluster_reconciler.h"
#include "operator/fleet/members.h"
#include "runtime/cache_reader.h"
#include "runtime/manager.h"

namespace kiln::fleet {

struct FleetOptions {
  // The hub namespace whose Secrets hold member kubeconfigs (the operator's own).
  std::string secret_namespace;
  int workers = 4;  // Concurrent reconciles (one slow member must not stall the rest).
  kube::ClientOptions member_client_options;
};

// Whether `hub` serves MemberClusters: NotFound when it positively does not
// (their CRD is not installed), so the operator can run without the fleet
// controller rather than wait forever for a cache that cannot sync; ok when
// it does; another error when discovery failed (e.g. unreachable: the
// informer would retry until it can).
Status MemberClustersServed(const kube::RestConfig& hub);

class Fleet {
 public:
  // Registers the MemberCluster controller with `manager`; `hub` (the
  // operator's cluster) and `manager` must outlive the Fleet, which must
  // outlive the manager's Run.
  static StatusOr<std::unique_ptr<Fleet>> Register(runtime::Manager& manager, kube::Client& hub,
                                                   FleetOptions options);
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  Members& members() { return members_; }
  CapacityView& capacity() { return view_; }
  // Tells `listener` of every kiln pod event in every member (see
  // cluster_connector.h), e.g. to wake the controller of the pod's job.
  void OnMemberPod(PodListener listener) { connector_.AddPodListener(std::move(listener)); }

 private:
  Fleet(kube::Informer& clusters, kube::Informer& secrets, kube::Client& hub,
        runtime::EventRecorder& recorder, FleetOptions options);

  CapacityView view_;
  Members members_;
  ClusterConnector connector_;
  runtime::CacheReader clusters_;
  runtime::CacheReader secrets_;
  ApiStatusWriter status_writer_;
  MemberClusterReconciler reconciler_;
};

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_FLEET_H_
