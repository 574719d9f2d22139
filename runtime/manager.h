// Manager: runs an operator's informers and controllers the way
// controller-runtime's manager does. Run starts the metrics and health
// endpoints, starts every informer and waits for their caches, then — on the
// leader only, when leader election is configured — starts the controllers.
// It stops on request (e.g. SIGTERM): every reconcile's Context is stopped
// and controllers drain their in-flight reconciles (bounded by the
// graceful-shutdown timeout), then the lease is
// released so a standby takes over at once, then informers and endpoints stop.
// Losing leadership stops everything and Run returns Aborted: the process
// should exit and be restarted, as client-go advises, since a former leader
// cannot know what it missed.
// Thread safety: set up (GetInformer, informers' AddIndex, AddController and
// their watches) from one thread before Run; the accessors are thread-safe.
#ifndef KILN_RUNTIME_MANAGER_H_
#define KILN_RUNTIME_MANAGER_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "kube/client.h"
#include "kube/informer.h"
#include "runtime/controller.h"
#include "runtime/event_recorder.h"
#include "runtime/health_checks.h"
#include "runtime/leader_election.h"
#include "runtime/metrics.h"

namespace kiln::runtime {

struct ManagerOptions {
  std::string name = "kiln-operator";  // Events' source component.
  // "0" disables an endpoint; the same address for both serves all routes.
  std::string metrics_bind_address = ":8080";
  std::string health_probe_bind_address = ":8081";
  // Campaign on this Lease (through the manager's client) before starting
  // controllers; without it, controllers start at once.
  std::optional<LeaderElectionConfig> leader_election;
  std::chrono::milliseconds cache_sync_timeout{std::chrono::minutes(2)};
  std::chrono::milliseconds graceful_shutdown_timeout{std::chrono::seconds(30)};
  Metrics* metrics = nullptr;  // Default: Metrics::Global().
};

class Manager {
 public:
  // `client` (the cluster the operator runs in: leases, events) must outlive
  // the manager.
  Manager(kube::Client& client, ManagerOptions options);
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // The one informer for `resource` in `options.ns` of the cluster `client`
  // talks to, made on first request and owned by the manager: controllers
  // share it, and its indexes (Informer::AddIndex) are registered once.
  // Asking again with other options for the same key is FailedPrecondition,
  // as is asking for a new informer once Run has started them. The client
  // may be any member cluster's and must outlive the manager.
  StatusOr<kube::Informer*> GetInformer(kube::Client& client, const kube::Resource& resource,
                                        kube::InformerOptions options = {});
  Controller& AddController(const std::string& name, Reconciler& reconciler,
                            ControllerOptions options = {});

  Metrics& metrics() { return *metrics_; }
  HealthChecks& healthz() { return healthz_; }
  HealthChecks& readyz() { return readyz_; }
  EventRecorder& events() { return events_; }
  bool leading() const { return leading_.load(); }
  // The URLs the endpoints listen on once Run has started them ("" if off).
  std::string metrics_url() const;
  std::string health_url() const;

  // Runs until `stop` becomes true or leadership is lost. Ok on a requested
  // stop; Aborted when leadership was lost; the error when an endpoint could
  // not start or the caches did not sync in time.
  Status Run(const std::atomic<bool>& stop);

 private:
  Status StartServers();
  void StartControllers();
  bool StopControllers();  // False if the graceful-shutdown timeout ran out.
  void Shutdown();

  kube::Client& client_;
  const ManagerOptions options_;
  Metrics* const metrics_;
  const log::Logger log_;
  HealthChecks healthz_{"/healthz"};
  HealthChecks readyz_{"/readyz"};
  EventRecorder events_;
  std::vector<std::unique_ptr<kube::Informer>> informers_;
  std::vector<std::string> informer_names_;
  std::atomic<bool> informers_started_{false};
  std::vector<std::unique_ptr<Controller>> controllers_;
  std::vector<std::unique_ptr<HttpServer>> servers_;
  std::unique_ptr<LeaderElector> elector_;
  std::atomic<bool> leading_{false};
  std::atomic<bool> controllers_started_{false};
  mutable std::mutex mu_;
  std::string metrics_url_, health_url_;  // Guarded by mu_.
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_MANAGER_H_
