#include "operator/controllers/modeldeployment/metrics_source.h"

#include <chrono>

#include <nlohmann/json.hpp>

#include "kube/rest_config.h"

namespace kiln::modeldeployment {
namespace {

using nlohmann::json;

double Number(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

// The derived figures of one kind of traffic, as the summary serves them.
TrafficFigures Figures(const json& j) {
  return {.requests = static_cast<int64_t>(Number(j, "requests")),
          .errors = static_cast<int64_t>(Number(j, "errors")),
          .error_rate = Number(j, "errorRate"),
          .latency_p50 = Number(j, "latencyP50"),
          .latency_p99 = Number(j, "latencyP99"),
          .ttft_p99 = Number(j, "timeToFirstToken")};
}

}  // namespace

StatusOr<TrafficWindow> ParseRouterSummary(const std::string& body, const std::string& route) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("versions") || !j["versions"].is_array()) {
    return Status::InvalidArgument("not a kiln-router summary: " + body.substr(0, 200));
  }
  TrafficWindow out;
  for (const json& v : j["versions"]) {
    if (!v.is_object() || v.value("route", "") != route) continue;
    const std::string version = v.value("version", "");
    if (version.empty()) continue;
    // A kiln-router older than mirrored counts serves none: no mirrored requests.
    auto mirrored = v.find("mirrored");
    out[version] = VersionWindow::Of(Figures(v), mirrored != v.end() && mirrored->is_object()
                                                     ? Figures(*mirrored)
                                                     : TrafficFigures{});
  }
  return out;
}

StatusOr<std::unique_ptr<RouterMetricsSource>> RouterMetricsSource::New(
    const std::string& base_url) {
  if (base_url.rfind("http://", 0) != 0 && base_url.rfind("https://", 0) != 0) {
    return Status::InvalidArgument("router URL " + base_url + " is not http:// or https://");
  }
  kube::RestConfig config;
  config.server = base_url;
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<kube::HttpTransport> transport,
                        kube::NewHttpTransport(config));
  return std::unique_ptr<RouterMetricsSource>(
      new RouterMetricsSource(base_url, std::move(transport)));
}

RouterMetricsSource::RouterMetricsSource(std::string base_url,
                                         std::unique_ptr<kube::HttpTransport> transport)
    : base_url_(std::move(base_url)), transport_(std::move(transport)) {}

StatusOr<TrafficWindow> RouterMetricsSource::Window(const std::string& route, int window_seconds) {
  kube::HttpRequest request;
  // kiln-router reads the window as a duration ("30s").
  request.path = "/debug/summary?window=" + std::to_string(window_seconds) + "s";
  request.timeout = std::chrono::seconds(5);
  KILN_ASSIGN_OR_RETURN(kube::HttpResponse response, transport_->Do(request));
  if (response.status != 200) {
    return Status::Unavailable(base_url_ + request.path + ": HTTP " +
                               std::to_string(response.status));
  }
  return ParseRouterSummary(response.body, route);
}

}  // namespace kiln::modeldeployment
