#include "operator/fleet/cluster_connector.h"

#include <mutex>

#include "kube/informer.h"
#include "kube/resource.h"
#include "operator/api/labels.h"
#include "operator/fleet/node_and_pod.h"
#include "runtime/cache_reader.h"

namespace kiln::fleet {
namespace {

// The pod informer's index of pods by the node they are bound to.
constexpr const char* kPodsByNode = "spec.nodeName";

// Passes `pod` to the listeners if it is one of kiln's (by the managed-by label).
void TellIfKiln(const std::string& cluster, ClusterConnector::Listeners& listeners,
                const kube::json& pod) {
  const kube::json labels = pod["metadata"].value("labels", kube::json::object());
  if (labels.value(api::kManagedByLabel, "") != api::kManagedByValue) return;
  std::lock_guard<std::mutex> lock(listeners.mu);
  for (const auto& listener : listeners.all) listener(cluster, pod);
}

kube::EventHandlers KilnPodHandlers(const std::string& cluster,
                                    std::shared_ptr<ClusterConnector::Listeners> listeners) {
  auto tell = [cluster, listeners](const kube::Object& pod) {
    TellIfKiln(cluster, *listeners, *pod);
  };
  return {.on_add = tell,
          .on_update = [tell](const kube::Object&, const kube::Object& now) { tell(now); },
          .on_delete = tell};
}

// Handlers telling the listeners of kiln's pods on a node that stops being
// Ready or is deleted: their controllers act on the node's failure at once,
// not when (or whether) Kubernetes gets round to the pods.
kube::EventHandlers NodeLossHandlers(const std::string& cluster, const kube::Informer& pods,
                                     std::shared_ptr<ClusterConnector::Listeners> listeners) {
  auto tell = [cluster, &pods, listeners](const kube::Object& node) {
    const std::string name = (*node)["metadata"].value("name", "");
    for (const kube::Object& pod : pods.store().ByIndex(kPodsByNode, name)) {
      TellIfKiln(cluster, *listeners, *pod);
    }
  };
  return {.on_update =
              [tell](const kube::Object& old, const kube::Object& now) {
                if (NodeReadyStatus(*old) == "True" && NodeReadyStatus(*now) != "True") {
                  tell(now);
                }
              },
          .on_delete = tell};
}

class ClusterMember final : public Member {
 public:
  ClusterMember(std::string name, std::unique_ptr<kube::Client> client,
                std::unique_ptr<kube::Client> probe_client, CapacityView& view,
                std::shared_ptr<ClusterConnector::Listeners> listeners)
      : name_(std::move(name)),
        client_(std::move(client)),
        probe_client_(std::move(probe_client)),
        nodes_(*client_, kube::resources::kNodes),
        pods_(*client_, kube::resources::kPods,
              {.field_selector = "status.phase!=Succeeded,status.phase!=Failed"}),
        node_reader_(nodes_),
        pod_reader_(pods_) {
    // The caches keep only what the fleet reads (node_and_pod.h): with
    // whole objects, they were most of the operator's memory.
    (void)nodes_.SetTransform(NodeAsWatched);
    (void)pods_.SetTransform(PodAsWatched);
    (void)pods_.AddIndex(kPodsByNode, [](const kube::json& pod) {
      const std::string node = pod.value("spec", kube::json::object()).value("nodeName", "");
      return node.empty() ? std::vector<std::string>{} : std::vector<std::string>{node};
    });
    nodes_.AddHandlers(view.NodeHandlers(name_));
    nodes_.AddHandlers(NodeLossHandlers(name_, pods_, listeners));
    pods_.AddHandlers(view.PodHandlers(name_));
    pods_.AddHandlers(KilnPodHandlers(name_, std::move(listeners)));
    nodes_.Start();
    pods_.Start();
  }
  ~ClusterMember() override { Stop(); }

  const std::string& name() const override { return name_; }
  kube::Client& client() override { return *client_; }
  const runtime::Reader& nodes() const override { return node_reader_; }
  const runtime::Reader& pods() const override { return pod_reader_; }

  Status Probe(std::chrono::milliseconds timeout) override {
    kube::HttpRequest request;
    request.path = "/readyz";
    request.timeout = timeout;
    KILN_RETURN_IF_ERROR(probe_client_->Request(request).status());
    if (version().empty()) {
      // Best effort: the version is for status only; the probe has answered.
      if (auto v = probe_client_->ServerVersion(); v.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        version_ = v->value("gitVersion", "");
      }
    }
    return Status::Ok();
  }

  std::string version() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return version_;
  }

  Status CachesSynced() const override {
    for (const kube::Informer* informer : {&nodes_, &pods_}) {
      if (informer->HasSynced()) continue;
      Status last = informer->last_error();
      return Status::Unavailable(informer->resource().resource + " not synced yet" +
                                 (last.ok() ? "" : ": " + last.message()));
    }
    return Status::Ok();
  }

  void Stop() override {
    nodes_.Stop();
    pods_.Stop();
  }

 private:
  const std::string name_;
  std::unique_ptr<kube::Client> client_;
  std::unique_ptr<kube::Client> probe_client_;
  kube::Informer nodes_;
  kube::Informer pods_;
  runtime::CacheReader node_reader_;
  runtime::CacheReader pod_reader_;
  mutable std::mutex mu_;
  std::string version_;  // Guarded by mu_.
};

}  // namespace

ClusterConnector::ClusterConnector(CapacityView& view, kube::ClientOptions client_options)
    : view_(view), client_options_(std::move(client_options)) {}

StatusOr<std::shared_ptr<Member>> ClusterConnector::Connect(const std::string& name,
                                                            const kube::RestConfig& config) {
  KILN_ASSIGN_OR_RETURN(auto client, kube::Client::New(config, client_options_));
  kube::ClientOptions probe_options = client_options_;
  probe_options.max_retries = 0;
  probe_options.observer = nullptr;  // Heartbeats are not API traffic worth charting.
  KILN_ASSIGN_OR_RETURN(auto probe_client, kube::Client::New(config, probe_options));
  return std::shared_ptr<Member>(std::make_shared<ClusterMember>(
      name, std::move(client), std::move(probe_client), view_, listeners_));
}

void ClusterConnector::AddPodListener(PodListener listener) {
  std::lock_guard<std::mutex> lock(listeners_->mu);
  listeners_->all.push_back(std::move(listener));
}

}  // namespace kiln::fleet
