#include "operator/fleet/fleet.h"

#include "kube/resource.h"
#include "operator/api/v1alpha1/resources.h"

namespace kiln::fleet {

Status MemberClustersServed(const kube::RestConfig& hub) {
  // One attempt, no retries: this only decides whether to register.
  kube::ClientOptions options;
  options.max_retries = 0;
  options.request_timeout = std::chrono::seconds(10);
  KILN_ASSIGN_OR_RETURN(auto client, kube::Client::New(hub, options));
  return client
      ->ResourceFor(api::v1alpha1::kMemberClusters.api_version(),
                    api::v1alpha1::kMemberClusters.kind)
      .status();
}

Fleet::Fleet(kube::Informer& clusters, kube::Informer& secrets, kube::Client& hub,
             runtime::EventRecorder& recorder, FleetOptions options)
    : connector_(view_, options.member_client_options),
      clusters_(clusters),
      secrets_(secrets),
      status_writer_(hub),
      reconciler_(clusters_, secrets_, connector_, members_, view_, status_writer_,
                  [&recorder](const kube::json& object, runtime::EventType type,
                              const std::string& reason, const std::string& message) {
                    recorder.Record(object, type, reason, message);
                  },
                  {.secret_namespace = options.secret_namespace, .local_config = hub.config()}) {}

StatusOr<std::unique_ptr<Fleet>> Fleet::Register(runtime::Manager& manager, kube::Client& hub,
                                                 FleetOptions options) {
  if (options.secret_namespace.empty()) {
    return Status::InvalidArgument("fleet: the kubeconfig Secrets' namespace is required");
  }
  KILN_ASSIGN_OR_RETURN(kube::Informer * clusters,
                        manager.GetInformer(hub, api::v1alpha1::kMemberClusters));
  KILN_ASSIGN_OR_RETURN(
      kube::Informer * secrets,
      manager.GetInformer(hub, kube::resources::kSecrets, {.ns = options.secret_namespace}));
  const int workers = options.workers;
  std::unique_ptr<Fleet> fleet(
      new Fleet(*clusters, *secrets, hub, manager.events(), std::move(options)));
  runtime::Controller& controller =
      manager.AddController("membercluster", fleet->reconciler_, {.workers = workers});
  controller.For(*clusters);
  MemberClusterReconciler* reconciler = &fleet->reconciler_;
  controller.Watches(
      *secrets, [reconciler](const kube::Object& secret) { return reconciler->MapSecret(secret); });
  return fleet;
}

}  // namespace kiln::fleet
