// kiln-operator: reconciles kiln.dev TrainingJob, ModelDeployment and
// MemberCluster resources. This main wires the controller runtime: it loads
// the cluster configuration, serves /metrics, /healthz and /readyz, takes part
// in leader election, logs JSON and stops gracefully on SIGTERM. Controllers
// register with the manager as they are implemented.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "base/duration.h"
#include "base/hostname.h"
#include "base/log.h"
#include "base/stop_signal.h"
#include "base/version.h"
#include "operator/kube/client.h"
#include "operator/kube/kubeconfig.h"
#include "operator/runtime/manager.h"

namespace {

using kiln::Status;
using kiln::StatusOr;

constexpr const char* kUsage =
    "Usage: kiln-operator [options]\n"
    "\n"
    "Runs the kiln operator, which gang-schedules GPU training jobs across member\n"
    "clusters and rolls out model versions gradually.\n"
    "\n"
    "Options (each also as --name=value):\n"
    "  --kubeconfig PATH                  Kubeconfig to use (default $KUBECONFIG, then the\n"
    "                                     in-cluster service account).\n"
    "  --context NAME                     Kubeconfig context (default: current-context).\n"
    "  --metrics-bind-address ADDR        Serve /metrics here (default :8080; 0 disables).\n"
    "  --health-probe-bind-address ADDR   Serve /healthz and /readyz here (default :8081; 0\n"
    "                                     disables).\n"
    "  --leader-elect                     Run controllers only while holding the Lease.\n"
    "  --leader-election-id NAME          The Lease's name (default kiln-operator).\n"
    "  --leader-election-namespace NS     The Lease's namespace (default $POD_NAMESPACE,\n"
    "                                     then the config's namespace).\n"
    "  --leader-election-identity ID      This candidate's identity (default\n"
    "                                     <hostname>_<random>).\n"
    "  --lease-duration D                 (default 15s)\n"
    "  --renew-deadline D                 (default 10s)\n"
    "  --retry-period D                   (default 2s)\n"
    "  --graceful-shutdown-timeout D      How long in-flight reconciles may take to finish\n"
    "                                     after SIGTERM (default 30s).\n"
    "  --kube-api-qps N, --kube-api-burst N\n"
    "                                     Client-side rate limit (default 50 and 100).\n"
    "  --log-level LEVEL                  debug, info, warn or error (default info).\n"
    "  --log-format FORMAT                json or text (default json).\n"
    "  --help                             Show this help and exit.\n"
    "  --version                          Print the version and exit.\n"
    "\n"
    "Durations are written like 15s, 500ms or 1m30s. SIGTERM or SIGINT stops the\n"
    "operator gracefully; a second one exits at once.\n"
    "\n"
    "Exit status: 0 after a requested stop, 1 on a runtime failure (including lost\n"
    "leadership), 2 for bad usage or configuration.\n";

int Usage(const std::string& why) {
  std::fprintf(stderr, "kiln-operator: %s\n\nRun 'kiln-operator --help' for usage.\n", why.c_str());
  return 2;
}

struct Flags {
  std::map<std::string, std::string> values;
  bool leader_elect = false;
};

const char* const kValueFlags[] = {"kubeconfig",
                                   "context",
                                   "metrics-bind-address",
                                   "health-probe-bind-address",
                                   "leader-election-id",
                                   "leader-election-namespace",
                                   "leader-election-identity",
                                   "lease-duration",
                                   "renew-deadline",
                                   "retry-period",
                                   "graceful-shutdown-timeout",
                                   "kube-api-qps",
                                   "kube-api-burst",
                                   "log-level",
                                   "log-format"};

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
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("%s\n", kiln::VersionLine("kiln-operator").c_str());
      return 0;
    }
    if (arg == "--leader-elect" || arg == "--leader-elect=true") {
      flags.leader_elect = true;
      continue;
    }
    if (arg == "--leader-elect=false") continue;
    if (arg.rfind("--", 0) != 0) return Usage("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    bool known = false;
    for (const char* f : kValueFlags) known = known || name == f;
    if (!known) return Usage("unknown flag '--" + name + "'");
    if (!has_value) {
      if (i + 1 >= argc) return Usage("flag '--" + name + "' needs a value");
      value = argv[++i];
    }
    flags.values[name] = value;
  }
  auto flag = [&](const std::string& name, const std::string& fallback) {
    auto it = flags.values.find(name);
    return it == flags.values.end() ? fallback : it->second;
  };
  auto duration = [&](const std::string& name,
                      const char* fallback) -> StatusOr<std::chrono::milliseconds> {
    auto d = kiln::ParseDuration(flag(name, fallback));
    if (!d.ok()) return Status::InvalidArgument("--" + name + ": " + d.status().message());
    return std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  };

  auto level = kiln::log::ParseLevel(flag("log-level", "info"));
  if (!level.ok()) return Usage("--log-level: " + level.status().message());
  auto format = kiln::log::ParseFormat(flag("log-format", "json"));
  if (!format.ok()) return Usage("--log-format: " + format.status().message());
  kiln::log::SetLevel(*level);
  kiln::log::SetFormat(*format);
  kiln::log::Logger log("setup");

  kiln::runtime::ManagerOptions options;
  options.metrics_bind_address = flag("metrics-bind-address", ":8080");
  options.health_probe_bind_address = flag("health-probe-bind-address", ":8081");
  for (const auto* address : {&options.metrics_bind_address, &options.health_probe_bind_address}) {
    if (*address == "0") continue;
    if (auto parsed = kiln::ParseBindAddress(*address); !parsed.ok()) {
      return Usage(parsed.status().message());
    }
  }
  auto grace = duration("graceful-shutdown-timeout", "30s");
  if (!grace.ok()) return Usage(grace.status().message());
  options.graceful_shutdown_timeout = *grace;

  kiln::kube::ClientOptions client_options;
  client_options.observer = &kiln::runtime::Metrics::Global();
  try {
    client_options.qps = std::stod(flag("kube-api-qps", "50"));
    client_options.burst = std::stoi(flag("kube-api-burst", "100"));
  } catch (const std::exception&) {
    return Usage("--kube-api-qps and --kube-api-burst take numbers");
  }

  // Leader election is checked before the configuration is loaded, so a
  // bad flag is reported as such rather than hidden behind a config error.
  kiln::runtime::LeaderElectionConfig lec;
  if (flags.leader_elect) {
    const char* pod_ns = std::getenv("POD_NAMESPACE");
    lec.lease_namespace = flag("leader-election-namespace", pod_ns != nullptr ? pod_ns : "");
    lec.lease_name = flag("leader-election-id", "kiln-operator");
    lec.identity =
        flag("leader-election-identity", HostnameOr("kiln-operator") + "_" + RandomSuffix());
    for (auto [name, fallback, field] : {std::tuple{"lease-duration", "15s", &lec.lease_duration},
                                         std::tuple{"renew-deadline", "10s", &lec.renew_deadline},
                                         std::tuple{"retry-period", "2s", &lec.retry_period}}) {
      auto d = duration(name, fallback);
      if (!d.ok()) return Usage(d.status().message());
      *field = *d;
    }
    kiln::runtime::LeaderElectionConfig check = lec;
    if (check.lease_namespace.empty()) check.lease_namespace = "default";
    if (Status s = kiln::runtime::LeaderElector::Validate(check); !s.ok()) {
      return Usage(s.message());
    }
  }

  // Configuration: --kubeconfig, then $KUBECONFIG, then in-cluster.
  std::string kubeconfig = flag("kubeconfig", "");
  if (kubeconfig.empty() && std::getenv("KUBECONFIG") != nullptr) {
    kubeconfig = std::getenv("KUBECONFIG");
  }
  StatusOr<kiln::kube::RestConfig> config =
      kubeconfig.empty() ? kiln::kube::InClusterConfig()
                         : kiln::kube::LoadKubeconfig(kubeconfig, flag("context", ""));
  if (!config.ok()) {
    log.Error(config.status(), "cannot load the cluster configuration");
    return 2;
  }

  if (flags.leader_elect) {
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
                        {"leaderElection", flags.leader_elect}});
  kiln::runtime::Manager manager(**client, options);
  Status result = manager.Run(stop.requested());
  if (!result.ok()) {
    log.Error(result, "manager stopped with an error");
    return 1;
  }
  log.Info("exiting", {{"signal", stop.signal_number()}});
  return 0;
}
