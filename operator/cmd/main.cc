// kiln-operator: reconciles kiln.dev TrainingJob, ModelDeployment and
// MemberCluster resources. This main wires the controller runtime: it loads
// the cluster configuration, serves /metrics, /healthz and /readyz, takes part
// in leader election, logs JSON and stops gracefully on SIGTERM. Controllers
// register with the manager as they are implemented: today the MemberCluster
// controller (operator/fleet), the TrainingJob and the ModelDeployment
// controllers (operator/controllers/).
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <string>

#include "base/flags.h"
#include "base/hostname.h"
#include "base/http_server.h"
#include "base/log.h"
#include "base/stop_signal.h"
#include "base/version.h"
#include "kube/client.h"
#include "kube/kubeconfig.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/modeldeployment/member_routers_source.h"
#include "operator/controllers/modeldeployment/metrics.h"
#include "operator/controllers/modeldeployment/metrics_source.h"
#include "operator/controllers/modeldeployment/prometheus_source.h"
#include "operator/controllers/modeldeployment/reconciler.h"
#include "operator/controllers/modeldeployment/router_replicas_source.h"
#include "operator/controllers/trainingjob/metrics.h"
#include "operator/controllers/trainingjob/progress_reader.h"
#include "operator/controllers/trainingjob/reconciler.h"
#include "operator/fleet/fleet.h"
#include "runtime/manager.h"
#include "runtime/metrics.h"

namespace {

using kiln::Status;
using kiln::StatusOr;

constexpr const char* kSynopsis =
    "Usage: kiln-operator [options]\n"
    "\n"
    "Runs the kiln operator, which gang-schedules GPU training jobs across member\n"
    "clusters and rolls out model versions gradually.\n";

constexpr const char* kEpilogue =
    "Durations are written like 15s, 500ms or 1m30s. SIGTERM or SIGINT stops the\n"
    "operator gracefully; a second one exits at once.\n"
    "\n"
    "Exit status: 0 after a requested stop, 1 on a runtime failure (including lost\n"
    "leadership), 2 for bad usage or configuration.\n";

// A bind address flag: host:port, or 0 to disable.
Status CheckBindAddress(const std::string& text) {
  if (text == "0") return Status::Ok();
  return kiln::ParseBindAddress(text).status();
}

std::string HostnameOr(const std::string& fallback) {
  std::string h = kiln::Hostname();
  return h.empty() ? fallback : h;
}

std::string RandomSuffix() {
  std::random_device rd;
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", rd());
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::string kubeconfig, context, level_name = "info", format_name = "json";
  std::string fleet_secret_namespace;
  kiln::trainingjob::TrainingJobReconcilerOptions tj_options;
  kiln::trainingjob::PodProxyProgressReader progress_reader;
  tj_options.progress_reader = &progress_reader;
  kiln::trainingjob::TrainingJobMetrics tj_metrics(kiln::runtime::Metrics::Global().registry());
  tj_options.metrics = &tj_metrics;
  kiln::modeldeployment::ModelDeploymentMetrics md_rollout_metrics(
      kiln::runtime::Metrics::Global().registry());
  std::string router_url, router_service, router_port = "http";
  bool leader_elect = false, version = false;
  kiln::runtime::ManagerOptions options;
  kiln::kube::ClientOptions client_options;
  kiln::runtime::LeaderElectionConfig lec;
  lec.lease_name = "kiln-operator";
  const auto kMillisecond = std::chrono::milliseconds(1);
  kiln::FlagSet flags("kiln-operator", kSynopsis, kEpilogue);
  flags.String("kubeconfig", &kubeconfig, "Kubeconfig to use.")
      .Metavar("PATH")
      .DefaultText("$KUBECONFIG, then the in-cluster service account");
  flags.String("context", &context, "Kubeconfig context.")
      .Metavar("NAME")
      .DefaultText("current-context");
  flags
      .String("metrics-bind-address", &options.metrics_bind_address,
              "Serve /metrics here; 0 disables.")
      .Metavar("ADDR")
      .Check(CheckBindAddress);
  flags
      .String("health-probe-bind-address", &options.health_probe_bind_address,
              "Serve /healthz and /readyz here; 0 disables.")
      .Metavar("ADDR")
      .Check(CheckBindAddress);
  flags.Bool("leader-elect", &leader_elect, "Run controllers only while holding the Lease.");
  flags.String("leader-election-id", &lec.lease_name, "The Lease's name.").Metavar("NAME");
  flags.String("leader-election-namespace", &lec.lease_namespace, "The Lease's namespace.")
      .Metavar("NS")
      .DefaultText("$POD_NAMESPACE, then the config's namespace");
  flags.String("leader-election-identity", &lec.identity, "This candidate's identity.")
      .Metavar("ID")
      .DefaultText("<hostname>_<random>");
  flags.Duration("lease-duration", &lec.lease_duration, kMillisecond,
                 "How long a Lease holds without renewal.");
  flags.Duration("renew-deadline", &lec.renew_deadline, kMillisecond,
                 "How long the leader keeps trying to renew before it gives up.");
  flags.Duration("retry-period", &lec.retry_period, kMillisecond,
                 "How often candidates try to acquire or renew.");
  flags.Duration("graceful-shutdown-timeout", &options.graceful_shutdown_timeout,
                 std::chrono::milliseconds(0),
                 "How long in-flight reconciles may take to finish after SIGTERM.");
  flags.Double("kube-api-qps", &client_options.qps, 0, std::numeric_limits<double>::infinity(),
               "Client-side rate limit in requests per second; 0 disables it.");
  flags.Int("kube-api-burst", &client_options.burst, 1, std::numeric_limits<int>::max(),
            "Client-side rate limit's burst.");
  flags.String("log-level", &level_name, "debug, info, warn or error.")
      .Metavar("LEVEL")
      .Check([](const std::string& text) { return kiln::log::ParseLevel(text).status(); });
  flags.String("log-format", &format_name, "json or text.")
      .Metavar("FORMAT")
      .Check([](const std::string& text) { return kiln::log::ParseFormat(text).status(); });
  flags
      .String("member-secret-namespace", &fleet_secret_namespace,
              "Namespace of the MemberClusters' kubeconfig Secrets (read and watched).")
      .Metavar("NS")
      .DefaultText("$POD_NAMESPACE, then the config's namespace");
  flags
      .String("shared-volume-claim", &tj_options.volume.claim_name,
              "PersistentVolumeClaim (ReadWriteMany, in each job's namespace) that TrainingJob "
              "workers mount for checkpoints.")
      .Metavar("NAME");
  flags
      .String("shared-volume-host-path", &tj_options.volume.host_path,
              "Instead of a claim: a folder on every node (local clusters).")
      .Metavar("PATH");
  flags
      .String("shared-volume-mount-path", &tj_options.volume.mount_path,
              "Where workers mount the shared volume; file:// checkpoint URIs lie under it.")
      .Metavar("PATH");
  flags.Duration("trainingjob-grow-interval", &tj_options.grow_interval, kMillisecond,
                 "How often a TrainingJob running below spec.workers.replicas (an elastic job "
                 "started small, or one scaled up) looks for room to grow, and how long it runs "
                 "at one size before it grows: each resize costs a checkpoint and a restart of "
                 "every rank.");
  flags.Int("trainingjob-create-parallelism", &tj_options.create_parallelism, 1, 256,
            "How many of a TrainingJob's worker pods are created (and their scheduling gates "
            "lifted) at once; --kube-api-qps and --kube-api-burst still bound the rate.");
  flags
      .String("router-url", &router_url,
              "kiln-router's base URL (http://host:port): ModelDeployment analysis reads its "
              "per-version window from GET /debug/summary there, from whichever one router "
              "answers. Unset (and no --router-service): router metrics are inconclusive.")
      .Metavar("URL");
  flags
      .String("router-service", &router_service,
              "kiln-router's Service (<namespace>/<name>; a bare <name> is in $POD_NAMESPACE, "
              "then the config's namespace): "
              "ModelDeployment analysis asks every ready replica in its EndpointSlices for "
              "GET /debug/summary and merges their windows; a replica that does not answer "
              "makes the measurement inconclusive. Instead of --router-url.")
      .Metavar("NS/NAME")
      .Check([](const std::string& text) {
        return kiln::modeldeployment::ParseRouterReplicasOptions(text, "http", "default").status();
      });
  flags
      .String("router-port", &router_port,
              "With --router-service: the replicas' port, by its name in the EndpointSlices or "
              "as a number.")
      .Metavar("PORT")
      .Check([](const std::string& text) {
        return kiln::modeldeployment::ParseRouterReplicasOptions("default/router", text, "")
            .status();
      });
  flags.Bool("version", &version, "Print the version and exit.");
  if (auto exit = flags.ParseOrExit(argc, argv, 1)) return *exit;
  if (version) {
    std::printf("%s\n", kiln::VersionLine("kiln-operator").c_str());
    return 0;
  }

  if (!router_url.empty() && !router_service.empty()) {
    return flags.UsageError("--router-url and --router-service exclude each other");
  }

  kiln::log::SetLevel(*kiln::log::ParseLevel(level_name));
  kiln::log::SetFormat(*kiln::log::ParseFormat(format_name));
  kiln::log::Logger log("setup");
  client_options.observer = &kiln::runtime::Metrics::Global();

  // Leader election is checked before the configuration is loaded, so a
  // bad flag is reported as such rather than hidden behind a config error.
  if (leader_elect) {
    const char* pod_ns = std::getenv("POD_NAMESPACE");
    if (!flags.IsSet("leader-election-namespace") && pod_ns != nullptr) {
      lec.lease_namespace = pod_ns;
    }
    if (lec.identity.empty()) lec.identity = HostnameOr("kiln-operator") + "_" + RandomSuffix();
    kiln::runtime::LeaderElectionConfig check = lec;
    if (check.lease_namespace.empty()) check.lease_namespace = "default";
    if (Status s = kiln::runtime::LeaderElector::Validate(check); !s.ok()) {
      return flags.UsageError(s.message());
    }
  }

  // Configuration: --kubeconfig, then $KUBECONFIG, then in-cluster.
  if (kubeconfig.empty() && std::getenv("KUBECONFIG") != nullptr) {
    kubeconfig = std::getenv("KUBECONFIG");
  }
  StatusOr<kiln::kube::RestConfig> config = kubeconfig.empty()
                                                ? kiln::kube::InClusterConfig()
                                                : kiln::kube::LoadKubeconfig(kubeconfig, context);
  if (!config.ok()) {
    log.Error(config.status(), "cannot load the cluster configuration");
    return 2;
  }

  if (leader_elect) {
    if (lec.lease_namespace.empty()) lec.lease_namespace = config->default_namespace;
    options.leader_election = lec;
  }

  // From here on other threads exist: install the signal thread first so
  // every one of them inherits the blocked mask.
  kiln::StopSignal& stop = kiln::StopSignal::Install();
  auto client = kiln::kube::Client::New(*config, client_options);
  if (!client.ok()) {
    log.Error(client.status(), "cannot build the API client");
    return 2;
  }
  log.Info("starting", {{"version", kiln::VersionLine("kiln-operator")},
                        {"server", config->server},
                        {"context", config->context},
                        {"leaderElection", leader_elect}});
  kiln::runtime::Manager manager(**client, options);
  if (fleet_secret_namespace.empty()) {
    const char* pod_ns = std::getenv("POD_NAMESPACE");
    fleet_secret_namespace = pod_ns != nullptr ? pod_ns : config->default_namespace;
  }
  // The fleet and TrainingJob controllers, unless the hub positively lacks
  // kiln's CRDs (their caches could never sync, and no controller would ever
  // start: not even leader election would run).
  std::unique_ptr<kiln::fleet::Fleet> fleet;
  std::unique_ptr<kiln::trainingjob::TrainingJobReconciler> tj_reconciler;
  std::unique_ptr<kiln::modeldeployment::MetricsSource> md_metrics;
  kiln::modeldeployment::HttpPrometheusSource md_prometheus;
  std::unique_ptr<kiln::modeldeployment::ModelDeploymentReconciler> md_reconciler;
  Status served = kiln::fleet::MemberClustersServed(*config);
  if (served.code() == kiln::StatusCode::kNotFound) {
    log.Warn(
        "kiln's CRDs are not installed: running without the fleet, TrainingJob and ModelDeployment "
        "controllers",
        {{"crd", "memberclusters.kiln.dev"}, {"error", served.ToString()}});
  } else {
    if (!served.ok()) {
      log.Warn("cannot tell whether MemberClusters are served; starting the controllers",
               {{"error", served.ToString()}});
    }
    auto registered = kiln::fleet::Fleet::Register(
        manager, **client,
        {.secret_namespace = fleet_secret_namespace, .member_client_options = client_options});
    if (!registered.ok()) {
      log.Error(registered.status(), "cannot set up the MemberCluster controller");
      return 1;
    }
    fleet = std::move(*registered);
    auto jobs = manager.GetInformer(**client, kiln::api::v1alpha1::kTrainingJobs);
    if (!jobs.ok()) {
      log.Error(jobs.status(), "cannot set up the TrainingJob informer");
      return 1;
    }
    kiln::fleet::Fleet& f = *fleet;
    tj_reconciler = std::make_unique<kiln::trainingjob::TrainingJobReconciler>(
        **client, f.members(), f.capacity(), &manager.events(), tj_options);
    kiln::runtime::Controller& tj_controller =
        manager.AddController("trainingjob", *tj_reconciler, {.workers = 4});
    tj_controller.For(**jobs);
    // A worker's event in any member (it ran, failed, vanished) wakes its job.
    f.OnMemberPod([&tj_controller](const std::string&, const kiln::kube::json& pod) {
      if (auto job = kiln::trainingjob::JobOfWorker(pod)) tj_controller.queue().Add(job->Key());
    });

    // The ModelDeployment controller: its Deployments (labelled with the
    // deployment's name) wake it when their pods become ready.
    kiln::modeldeployment::ModelDeploymentReconcilerOptions md_options;
    md_options.volume = tj_options.volume;
    md_options.prometheus_source = &md_prometheus;
    md_options.metrics = &md_rollout_metrics;
    if (!router_url.empty()) {
      auto source = kiln::modeldeployment::RouterMetricsSource::New(router_url);
      if (!source.ok()) return flags.UsageError(source.status().message());
      md_metrics = std::move(*source);
    } else if (!router_service.empty()) {
      const char* pod_ns = std::getenv("POD_NAMESPACE");
      auto replicas = kiln::modeldeployment::ParseRouterReplicasOptions(
          router_service, router_port, pod_ns != nullptr ? pod_ns : config->default_namespace);
      if (!replicas.ok()) {
        return flags.UsageError("--router-service: " + replicas.status().message());
      }
      md_metrics =
          std::make_unique<kiln::modeldeployment::RouterReplicasMetricsSource>(**client, *replicas);
      // A deployment served in member clusters is measured by their routers
      // (the same Service in each), through their API servers.
      md_options.member_metrics = [&f,
                                   options = *replicas](const std::vector<std::string>& clusters)
          -> std::unique_ptr<kiln::modeldeployment::MetricsSource> {
        return std::make_unique<kiln::modeldeployment::MemberRoutersMetricsSource>(
            f.members(), clusters, options);
      };
    }
    md_options.metrics_source = md_metrics.get();
    md_options.members = &f.members();
    md_options.hub_member = tj_options.hub_member;
    auto mds = manager.GetInformer(**client, kiln::api::v1alpha1::kModelDeployments);
    auto deployments = manager.GetInformer(**client, kiln::kube::resources::kDeployments,
                                           {.label_selector = kiln::api::kModelDeploymentLabel});
    if (!mds.ok() || !deployments.ok()) {
      log.Error(!mds.ok() ? mds.status() : deployments.status(),
                "cannot set up the ModelDeployment informers");
      return 1;
    }
    md_reconciler = std::make_unique<kiln::modeldeployment::ModelDeploymentReconciler>(
        **client, &manager.events(), md_options);
    kiln::runtime::Controller& md_controller =
        manager.AddController("modeldeployment", *md_reconciler, {.workers = 4});
    md_controller.For(**mds);
    md_controller.Owns(**deployments, kiln::api::v1alpha1::kModelDeployments);
    // A serving pod's event in a member (it became ready, it went) wakes
    // its deployment, which lives in the same namespace of the hub.
    f.OnMemberPod([&md_controller](const std::string&, const kiln::kube::json& pod) {
      const auto& meta = pod["metadata"];
      const std::string name = meta.value("labels", kiln::kube::json::object())
                                   .value(kiln::api::kModelDeploymentLabel, "");
      if (!name.empty()) md_controller.queue().Add(meta.value("namespace", "") + "/" + name);
    });
  }
  Status result = manager.Run(stop.requested());
  if (!result.ok()) {
    log.Error(result, "manager stopped with an error");
    return 1;
  }
  log.Info("exiting", {{"signal", stop.signal_number()}});
  return 0;
}
