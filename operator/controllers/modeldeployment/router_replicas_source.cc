#include "operator/controllers/modeldeployment/router_replicas_source.h"

#include <algorithm>
#include <charconv>
#include <future>
#include <optional>
#include <set>
#include <utility>

#include "kube/rest_config.h"

namespace kiln::modeldeployment {
namespace {

using nlohmann::json;

// A port number 1..65535, or 0 when `text` is not one.
int PortNumber(const std::string& text) {
  int value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < 1 || value > 65535) return 0;
  return value;
}

// The slice's port called `name`; 0 when it has none.
int NamedPort(const json& slice, const std::string& name) {
  auto ports = slice.find("ports");
  if (ports == slice.end() || !ports->is_array()) return 0;
  for (const json& p : *ports) {
    if (p.is_object() && p.value("name", "") == name && p.contains("port") &&
        p["port"].is_number_integer()) {
      return p["port"].get<int>();
    }
  }
  return 0;
}

// kiln-router reads the window as a duration ("30s").
std::string SummaryPath(int window_seconds) {
  return "/debug/summary?window=" + std::to_string(window_seconds) + "s";
}

StatusOr<router::WindowSummary> ParseSummary(const std::string& body) {
  return router::WindowSummary::FromJson(json::parse(body, nullptr, /*allow_exceptions=*/false));
}

// The calling thread's Context, or one that is never done; for work handed
// to other threads, which do not inherit it.
Context CallersContext() {
  const Context* current = Context::Current();
  return current != nullptr ? *current : Context();
}

bool Ready(const json& endpoint) {
  auto conditions = endpoint.find("conditions");
  if (conditions == endpoint.end() || !conditions->is_object()) return true;
  auto ready = conditions->find("ready");
  return ready == conditions->end() || !ready->is_boolean() || ready->get<bool>();
}

// The figures of one kind of traffic, from its counts and buckets.
TrafficFigures FiguresOf(const router::TrafficSummary& t) {
  return {.requests = static_cast<int64_t>(t.requests),
          .errors = static_cast<int64_t>(t.errors),
          .error_rate = t.ErrorRate(),
          .latency_p50 = t.latency.Quantile(0.5),
          .latency_p99 = t.latency.Quantile(0.99),
          .ttft_p99 = t.first_token.Quantile(0.99)};
}

}  // namespace

StatusOr<RouterReplicasOptions> ParseRouterReplicasOptions(const std::string& service,
                                                           const std::string& port,
                                                           const std::string& default_ns) {
  RouterReplicasOptions options;
  const size_t slash = service.find('/');
  options.ns = slash == std::string::npos ? default_ns : service.substr(0, slash);
  options.service = slash == std::string::npos ? service : service.substr(slash + 1);
  if (options.ns.empty() || options.service.empty() ||
      options.service.find('/') != std::string::npos) {
    return Status::InvalidArgument("service \"" + service +
                                   "\" is not <namespace>/<name> or <name>");
  }
  const bool name =
      !port.empty() && port.size() <= 15 &&
      port.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos &&
      port.find_first_not_of("0123456789") != std::string::npos;
  if (!name && PortNumber(port) == 0) {
    return Status::InvalidArgument("port \"" + port +
                                   "\" is neither a port name nor a number 1..65535");
  }
  options.port = port;
  return options;
}

std::vector<RouterReplica> ReadyRouterReplicas(const std::vector<json>& slices,
                                               const std::string& port) {
  const int number = PortNumber(port);
  // IPv4 slices first, so a dual-stack pod is reached by its IPv4 address.
  std::vector<const json*> ordered;
  for (const json& s : slices) {
    const std::string type = s.value("addressType", "");
    if (type == "IPv4" || type == "IPv6") ordered.push_back(&s);
  }
  std::stable_sort(ordered.begin(), ordered.end(), [](const json* a, const json* b) {
    return a->value("addressType", "") == "IPv4" && b->value("addressType", "") != "IPv4";
  });
  std::map<std::string, RouterReplica> by_name;
  for (const json* slice : ordered) {
    const int p = number != 0 ? number : NamedPort(*slice, port);
    auto endpoints = slice->find("endpoints");
    if (p == 0 || endpoints == slice->end() || !endpoints->is_array()) continue;
    for (const json& e : *endpoints) {
      if (!e.is_object() || !Ready(e)) continue;
      auto addresses = e.find("addresses");
      if (addresses == e.end() || !addresses->is_array() || addresses->empty() ||
          !(*addresses)[0].is_string()) {
        continue;
      }
      const std::string ip = (*addresses)[0].get<std::string>();
      std::string name = ip;
      std::string pod;
      if (auto ref = e.find("targetRef"); ref != e.end() && ref->is_object()) {
        name = ref->value("name", ip);
        if (ref->value("kind", "") == "Pod") pod = ref->value("name", "");
      }
      const std::string host = ip.find(':') != std::string::npos ? "[" + ip + "]" : ip;
      by_name.emplace(
          name,
          RouterReplica{
              .name = name, .pod = pod, .address = host + ":" + std::to_string(p), .port = p});
    }
  }
  std::vector<RouterReplica> out;
  for (auto& [name, replica] : by_name) out.push_back(std::move(replica));
  return out;
}

StatusOr<router::WindowSummary> MergeAnswers(
    std::vector<std::future<StatusOr<router::WindowSummary>>>& answers,
    const std::function<std::string(size_t)>& name_of, const std::string& what) {
  std::optional<router::WindowSummary> merged;
  std::string failed;
  size_t failures = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    StatusOr<router::WindowSummary> answer = answers[i].get();
    Status s = answer.status();
    if (s.ok() && merged) s = merged->Merge(*answer);
    if (s.ok() && !merged) merged = std::move(*answer);
    if (!s.ok()) {
      ++failures;
      failed += (failed.empty() ? "" : "; ") + name_of(i) + ": " + s.message();
    }
  }
  if (failures > 0 || !merged) {
    return Status::Unavailable(std::to_string(failures) + " of " + std::to_string(answers.size()) +
                               " " + what + ": " + failed);
  }
  return std::move(*merged);
}

TrafficWindow TrafficWindowOf(const router::WindowSummary& summary, const std::string& route) {
  TrafficWindow out;
  for (const auto& [key, v] : summary.versions) {
    if (key.first != route) continue;
    out[key.second] = VersionWindow::Of(FiguresOf(v), FiguresOf(v.mirrored));
  }
  return out;
}

RouterReplicasMetricsSource::RouterReplicasMetricsSource(kube::Client& client,
                                                         RouterReplicasOptions options)
    : client_(client), options_(std::move(options)) {}

StatusOr<TrafficWindow> RouterReplicasMetricsSource::Window(const std::string& route,
                                                            int window_seconds) {
  KILN_ASSIGN_OR_RETURN(router::WindowSummary merged, Summary(window_seconds));
  return TrafficWindowOf(merged, route);
}

StatusOr<router::WindowSummary> RouterReplicasMetricsSource::Summary(int window_seconds) {
  const std::string service = options_.ns + "/" + options_.service;
  json list;
  {
    // Through the API server, the list is bounded as the answers are.
    std::optional<ScopedContext> bounded;
    if (options_.through_api_server) {
      bounded.emplace(CallersContext().WithTimeout(options_.timeout));
    }
    KILN_ASSIGN_OR_RETURN(list, client_.ListAll(kube::resources::kEndpointSlices, options_.ns,
                                                {.label_selector = "kubernetes.io/service-name=" +
                                                                   options_.service}));
  }
  std::vector<json> slices;
  if (list.contains("items") && list["items"].is_array()) {
    for (json& item : list["items"]) slices.push_back(std::move(item));
  }
  const std::vector<RouterReplica> replicas = ReadyRouterReplicas(slices, options_.port);
  ForgetAllBut(replicas);
  if (replicas.empty()) {
    return Status::Unavailable("no ready kiln-router replica behind Service " + service +
                               " (port " + options_.port + ")");
  }

  // One deadline for every answer; the threads do not inherit the caller's
  // Context, so each is handed it.
  const Context deadline = CallersContext().WithTimeout(options_.timeout);
  std::vector<std::future<StatusOr<router::WindowSummary>>> answers;
  answers.reserve(replicas.size());
  for (const RouterReplica& replica : replicas) {
    answers.push_back(std::async(std::launch::async, [this, &replica, window_seconds, &deadline] {
      return options_.through_api_server ? AskThroughApiServer(replica, window_seconds, deadline)
                                         : Ask(replica, window_seconds);
    }));
  }
  return MergeAnswers(
      answers, [&](size_t i) { return replicas[i].name + " (" + replicas[i].address + ")"; },
      "kiln-router replicas of " + service +
          " did not answer, so their share of the traffic is unknown");
}

StatusOr<router::WindowSummary> RouterReplicasMetricsSource::Ask(const RouterReplica& replica,
                                                                 int window_seconds) {
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<kube::HttpTransport> transport,
                        TransportFor(replica.address));
  kube::HttpRequest request;
  request.path = SummaryPath(window_seconds);
  request.timeout = options_.timeout;
  KILN_ASSIGN_OR_RETURN(kube::HttpResponse response, transport->Do(request));
  if (response.status != 200) {
    return Status::Unavailable(request.path + ": HTTP " + std::to_string(response.status));
  }
  return ParseSummary(response.body);
}

StatusOr<router::WindowSummary> RouterReplicasMetricsSource::AskThroughApiServer(
    const RouterReplica& replica, int window_seconds, const Context& deadline) {
  if (replica.pod.empty()) {
    return Status::FailedPrecondition(
        "not a pod (no Pod targetRef), so the API server's pod proxy cannot reach it");
  }
  kube::HttpRequest request;
  request.path = "/api/v1/namespaces/" + options_.ns + "/pods/" + replica.pod + ":" +
                 std::to_string(replica.port) + "/proxy" + SummaryPath(window_seconds);
  request.timeout = options_.timeout;
  // The client retries a refused or failed proxy request; the deadline
  // keeps those retries from holding the reconcile up.
  ScopedContext bounded(deadline);
  KILN_ASSIGN_OR_RETURN(kube::HttpResponse response, client_.Request(request));
  return ParseSummary(response.body);
}

StatusOr<std::shared_ptr<kube::HttpTransport>> RouterReplicasMetricsSource::TransportFor(
    const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<kube::HttpTransport>& transport = transports_[address];
  if (!transport) {
    kube::RestConfig config;
    config.server = "http://" + address;
    StatusOr<std::unique_ptr<kube::HttpTransport>> made = kube::NewHttpTransport(config);
    if (!made.ok()) {
      transports_.erase(address);
      return made.status();
    }
    transport = std::move(*made);
  }
  return transport;
}

void RouterReplicasMetricsSource::ForgetAllBut(const std::vector<RouterReplica>& replicas) {
  std::set<std::string> keep;
  for (const RouterReplica& r : replicas) keep.insert(r.address);
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(transports_, [&](const auto& entry) { return keep.count(entry.first) == 0; });
}

}  // namespace kiln::modeldeployment
