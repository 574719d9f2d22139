// kiln-router: the data plane that splits a model's traffic between its
// versions (docs/router.md). Routes come from the Kubernetes API
// (ModelDeployments' status and their versions' EndpointSlices; the default;
// the ModelDeployments may come from a hub cluster, --hub-kubeconfig) or from
// a JSON file (--routes, re-read when it changes). Serves the
// OpenAI-compatible API on --listen, with /healthz, /readyz (after the first
// full sync), /metrics, /debug/routes and /debug/summary beside it; drains on
// SIGTERM.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>

#include "base/duration.h"
#include "base/file.h"
#include "base/flags.h"
#include "base/http_server.h"
#include "base/io_threads.h"
#include "base/log.h"
#include "base/stop_signal.h"
#include "base/version.h"
#include "kube/client.h"
#include "kube/kubeconfig.h"
#include "router/api_source.h"
#include "router/proxy.h"
#include "router/route_config.h"
#include "router/router_metrics.h"
#include "router/upstream.h"

namespace {

using kiln::Status;
using kiln::StatusOr;

constexpr const char* kSynopsis =
    "Usage: kiln-router [options]\n"
    "\n"
    "Routes OpenAI-compatible requests to the versions of kiln ModelDeployments by\n"
    "the weights their rollout sets, with header overrides, sticky sessions,\n"
    "mirroring and least-loaded endpoint choice.\n";

constexpr const char* kEpilogue =
    "Routes come from the API (ModelDeployments with traffic.provider Router, and\n"
    "their versions' EndpointSlices) unless --routes names a JSON file (see\n"
    "docs/router.md), which is re-read when it changes. With --hub-kubeconfig the\n"
    "ModelDeployments come from the hub cluster it names and the EndpointSlices\n"
    "from the router's own cluster (a member cluster). SIGTERM or SIGINT stops\n"
    "accepting, lets requests in flight finish for up to --drain-timeout, then\n"
    "exits. Exit status: 0 after a drain, 2 for bad usage or configuration.\n";

struct FileStamp {
  int64_t mtime_ns = -1;
  int64_t size = -1;
  bool operator!=(const FileStamp& o) const { return mtime_ns != o.mtime_ns || size != o.size; }
};

FileStamp Stamp(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return {};
  return {static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
          static_cast<int64_t>(st.st_size)};
}

Status LoadRoutes(const std::string& path, uint64_t generation, kiln::router::Proxy& proxy) {
  StatusOr<std::string> text = kiln::ReadFile(path);
  if (!text.ok()) return text.status();
  StatusOr<kiln::router::RouteConfig> config = kiln::router::RouteConfigFromJson(*text);
  if (!config.ok()) return config.status().WithContext(path);
  // The file's own generation, when it gives one, else the load count.
  if (config->generation == 0) config->generation = generation;
  return proxy.SetConfig(*std::move(config));
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = ":8000", routes_file, kubeconfig, context, watch_namespace;
  std::string hub_kubeconfig, hub_context;
  std::string level_name = "info", format_name = "json";
  int io_threads = 2;
  bool version = false;
  std::chrono::milliseconds drain_timeout(std::chrono::seconds(30));
  std::chrono::milliseconds shutdown_delay(0);
  kiln::HttpServerOptions server_options;
  kiln::router::UpstreamOptions upstream_options;
  size_t max_body_kib = 1024;
  const auto kMs = std::chrono::milliseconds(1);

  kiln::FlagSet flags("kiln-router", kSynopsis, kEpilogue);
  flags.String("listen", &listen, "Serve the API and the probes here.").Metavar("ADDR");
  flags.String("routes", &routes_file, "Route from this JSON file instead of the API.")
      .Metavar("FILE");
  flags.String("kubeconfig", &kubeconfig, "Kubeconfig to use.")
      .Metavar("PATH")
      .DefaultText("$KUBECONFIG, then the in-cluster service account");
  flags.String("context", &context, "Kubeconfig context.").Metavar("NAME");
  flags
      .String("hub-kubeconfig", &hub_kubeconfig,
              "Watch ModelDeployments in the hub cluster this kubeconfig names; EndpointSlices "
              "stay in the router's own cluster.")
      .Metavar("PATH")
      .DefaultText("ModelDeployments from the router's own cluster");
  flags.String("hub-context", &hub_context, "Context in --hub-kubeconfig.")
      .Metavar("NAME")
      .DefaultText("its current-context");
  flags
      .String("namespace", &watch_namespace,
              "Watch ModelDeployments and EndpointSlices in this namespace only.")
      .Metavar("NS")
      .DefaultText("all namespaces");
  flags.Int("io-threads", &io_threads, 1, 256,
            "Threads carrying the clients' connections and the backends' (one pool).");
  flags.Duration("drain-timeout", &drain_timeout, kMs,
                 "How long requests in flight may take to finish after SIGTERM.");
  flags.Duration("shutdown-delay", &shutdown_delay, std::chrono::milliseconds(0),
                 "After SIGTERM, keep accepting (with /readyz failing) this long first, "
                 "while load balancers notice.");
  flags.Duration("connect-timeout", &upstream_options.connect_timeout, kMs,
                 "Connecting to a backend.");
  flags.Duration("response-timeout", &upstream_options.response_timeout, kMs,
                 "From a request sent to its response's head (prefill included).");
  flags.Duration("idle-timeout", &upstream_options.idle_timeout, kMs,
                 "The longest pause inside a backend's response.");
  flags.Duration("header-timeout", &server_options.limits.header_timeout, kMs,
                 "A client's request head must arrive within this.");
  flags.Duration("body-timeout", &server_options.limits.body_timeout, kMs,
                 "A client's whole request body must arrive within this.");
  flags.Int("max-body-kib", &max_body_kib, size_t{1}, size_t{1} << 20,
            "Largest request body, in KiB (413 above).");
  flags.Int("max-connections", &server_options.limits.max_connections, 1, 1 << 20,
            "Client connections open at once.");
  flags.Enum("log-level", &level_name, {"debug", "info", "warn", "error"}, "Log level.");
  flags.Enum("log-format", &format_name, {"json", "text"}, "Log format.");
  flags.Bool("version", &version, "Print the version and exit.");
  if (auto exit = flags.ParseOrExit(argc, argv, 1)) return *exit;
  if (version) {
    std::printf("%s\n", kiln::VersionLine("kiln-router").c_str());
    return 0;
  }
  if (Status s = kiln::ParseBindAddress(listen).status(); !s.ok()) {
    return flags.UsageError("--listen: " + s.message());
  }
  if (!hub_context.empty() && hub_kubeconfig.empty()) {
    return flags.UsageError("--hub-context: needs --hub-kubeconfig");
  }
  if (!hub_kubeconfig.empty() && !routes_file.empty()) {
    return flags.UsageError("--hub-kubeconfig: routes come from --routes, not from a cluster");
  }
  kiln::log::SetLevel(*kiln::log::ParseLevel(level_name));
  kiln::log::SetFormat(*kiln::log::ParseFormat(format_name));
  kiln::log::Logger log("setup");

  // Configuration is checked before any thread starts.
  StatusOr<kiln::kube::RestConfig> rest = Status::FailedPrecondition("routes from a file");
  std::optional<kiln::kube::RestConfig> hub_rest;
  if (!hub_kubeconfig.empty()) {
    StatusOr<kiln::kube::RestConfig> hub = kiln::kube::LoadKubeconfig(hub_kubeconfig, hub_context);
    if (!hub.ok()) {
      log.Error(hub.status(), "--hub-kubeconfig: cannot load the hub cluster's configuration");
      return 2;
    }
    hub_rest = *std::move(hub);
  }
  if (routes_file.empty()) {
    if (kubeconfig.empty() && std::getenv("KUBECONFIG") != nullptr) {
      kubeconfig = std::getenv("KUBECONFIG");
    }
    rest = kubeconfig.empty() ? kiln::kube::InClusterConfig()
                              : kiln::kube::LoadKubeconfig(kubeconfig, context);
    if (!rest.ok()) {
      log.Error(rest.status(), "cannot load the cluster configuration (or pass --routes FILE)");
      return 2;
    }
  }

  kiln::StopSignal& stop = kiln::StopSignal::Install();
  // One pool of threads for both sides: a request and its backend call run
  // where they are, not handed from one pool to another.
  auto io = std::make_shared<kiln::IoThreads>(io_threads);
  upstream_options.shared_io = io;
  kiln::router::RouterMetrics metrics;
  kiln::router::Upstream upstream(upstream_options);
  kiln::router::Proxy proxy(upstream, metrics);
  std::atomic<bool> synced{false}, draining{false};

  // Routes from a file: loaded now (an error is fatal), then re-read when it
  // changes (an error keeps the table in use).
  uint64_t loads = 0;
  FileStamp stamp;
  if (!routes_file.empty()) {
    stamp = Stamp(routes_file);
    if (Status s = LoadRoutes(routes_file, ++loads, proxy); !s.ok()) {
      log.Error(s, "cannot load the routes");
      return 2;
    }
    synced = true;
  }

  std::unique_ptr<kiln::kube::Client> client, hub_client;
  std::unique_ptr<kiln::router::ApiSource> source;
  if (routes_file.empty()) {
    auto c = kiln::kube::Client::New(*rest, {});
    if (!c.ok()) {
      log.Error(c.status(), "cannot build the API client");
      return 2;
    }
    client = std::move(*c);
    if (hub_rest) {
      auto h = kiln::kube::Client::New(*hub_rest, {});
      if (!h.ok()) {
        log.Error(h.status(), "--hub-kubeconfig: cannot build the hub cluster's API client");
        return 2;
      }
      hub_client = std::move(*h);
      log.Info("ModelDeployments from the hub cluster", {{"server", hub_rest->server}});
    }
    kiln::router::ApiSourceOptions source_options;
    source_options.ns = watch_namespace;
    source = std::make_unique<kiln::router::ApiSource>(
        hub_client ? *hub_client : *client, *client, source_options,
        [&proxy, &synced, log](kiln::router::RouteConfig config) {
          const uint64_t generation = config.generation;
          if (Status s = proxy.SetConfig(std::move(config)); !s.ok()) {
            log.Error(s, "route table refused; the previous one stays");
            return;
          }
          synced = true;
          log.Debug("route table applied", {{"generation", generation}});
        });
    source->Start();
  }

  auto proxy_handler = [&proxy](kiln::HttpRequest& request,
                                std::shared_ptr<kiln::HttpResponder> responder) {
    proxy.Handle(request, std::move(responder));
  };
  server_options.bind_address = listen;
  server_options.shared_io = io;
  server_options.limits.max_body_bytes = max_body_kib << 10;
  server_options.error_reply = [](const kiln::HttpRequest&, int status,
                                  const std::string& message) {
    return kiln::router::JsonError(status, "invalid_request_error", "bad_request", message);
  };
  std::vector<kiln::HttpRoute> routes = {
      kiln::HttpRoute::Async("POST", "/", proxy_handler, kiln::HttpMatch::kPrefix),
      kiln::HttpRoute::Async("GET", "/", proxy_handler, kiln::HttpMatch::kPrefix),
      kiln::HttpRoute::Get("/healthz",
                           [](const kiln::HttpRequest&) {
                             return kiln::HttpReply{200, "text/plain", "ok\n"};
                           }),
      kiln::HttpRoute::Get("/readyz",
                           [&](const kiln::HttpRequest&) {
                             if (draining) return kiln::HttpReply{503, "text/plain", "draining\n"};
                             if (!synced) {
                               std::string why = "routes not synced yet";
                               if (source) {
                                 Status s = source->last_error();
                                 if (!s.ok()) why += ": " + s.ToString();
                               }
                               return kiln::HttpReply{503, "text/plain", why + "\n"};
                             }
                             return kiln::HttpReply{200, "text/plain", "ok\n"};
                           }),
      kiln::HttpRoute::Get(
          "/metrics",
          [&](const kiln::HttpRequest&) {
            return kiln::HttpReply{200, "text/plain; version=0.0.4", metrics.Scrape()};
          }),
      kiln::HttpRoute::Get("/debug/routes",
                           [&](const kiln::HttpRequest&) {
                             auto table = proxy.table();
                             kiln::router::RouteConfig empty;
                             kiln::HttpReply r{
                                 200, "application/json",
                                 kiln::router::RouteConfigToJson(table ? table->config() : empty)};
                             if (source) {
                               nlohmann::json problems = source->stats().problems;
                               r.headers.emplace_back("x-kiln-route-problems", problems.dump());
                             }
                             return r;
                           }),
      kiln::HttpRoute::Get(
          "/debug/summary",
          [&](const kiln::HttpRequest& request) {
            int window = 60;
            auto it = request.query.find("window");
            if (it != request.query.end()) {
              // A bare number is seconds, as Prometheus takes it.
              const bool bare = !it->second.empty() && it->second.size() < 9 &&
                                it->second.find_first_not_of("0123456789") == std::string::npos;
              StatusOr<std::chrono::nanoseconds> d =
                  kiln::ParseDuration(bare ? it->second + "s" : it->second);
              if (!d.ok() || *d < std::chrono::seconds(1)) {
                return kiln::router::JsonError(
                    400, "invalid_request_error", "bad_window",
                    "window: \"" + it->second + "\" is not a duration of at least 1s");
              }
              window =
                  static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(*d).count());
            }
            nlohmann::json summary = metrics.Summary(window);
            auto table = proxy.table();
            summary["generation"] = table ? table->generation() : 0;
            return kiln::HttpReply{200, "application/json", summary.dump() + "\n"};
          }),
  };
  auto server = kiln::HttpServer::Start(server_options, std::move(routes));
  if (!server.ok()) {
    log.Error(server.status(), "cannot serve");
    return 2;
  }
  log.Info("serving", {{"version", kiln::VersionLine("kiln-router")},
                       {"url", (*server)->url()},
                       {"routes", routes_file.empty() ? "api" : routes_file}});
  std::printf("kiln-router serving on %s\n", (*server)->url().c_str());
  std::fflush(stdout);

  const auto poll = std::chrono::milliseconds(routes_file.empty() ? 1000 : 200);
  while (!stop.WaitFor(poll)) {
    // Until the first sync /readyz says why not (the informers retry).
    if (source && !source->synced()) source->WaitForSync(std::chrono::milliseconds(500));
    if (routes_file.empty()) continue;
    FileStamp now = Stamp(routes_file);
    if (!(now != stamp)) continue;
    stamp = now;
    if (Status s = LoadRoutes(routes_file, ++loads, proxy); !s.ok()) {
      log.Error(s, "routes file refused; the previous table stays");
    } else {
      log.Info("routes reloaded", {{"generation", proxy.table()->generation()}});
    }
  }
  draining = true;
  log.Info("draining", {{"shutdownDelay", kiln::FormatDuration(shutdown_delay)},
                        {"timeout", kiln::FormatDuration(drain_timeout)}});
  if (shutdown_delay.count() > 0) std::this_thread::sleep_for(shutdown_delay);
  const bool clean = (*server)->Drain(drain_timeout);
  log.Info("drained", {{"clean", clean}});
  if (source) source->Stop();
  // No handler runs from here on; the upstream's pooled connections close
  // as it goes, before the threads' context.
  io->Stop();
  return 0;
}
