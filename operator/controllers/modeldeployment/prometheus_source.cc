#include "operator/controllers/modeldeployment/prometheus_source.h"

#include <chrono>
#include <cmath>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "kube/client.h"
#include "kube/rest_config.h"

namespace kiln::modeldeployment {
namespace {

using nlohmann::json;

// A sample's value: [<time>, "<number>"]; none for NaN, ±Inf or junk.
std::optional<double> SampleValue(const json& pair) {
  if (!pair.is_array() || pair.size() != 2 || !pair[1].is_string()) return std::nullopt;
  const std::string text = pair[1].get<std::string>();
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

StatusOr<std::optional<double>> ParsePrometheusResponse(const std::string& body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("status")) {
    return Status::InvalidArgument("not a Prometheus API response: " + body.substr(0, 200));
  }
  if (j.value("status", "") != "success") {
    return Status::FailedPrecondition(
        "Prometheus refused the query: " + j.value("errorType", std::string("error")) + ": " +
        j.value("error", std::string("")));
  }
  const json data = j.value("data", json::object());
  const std::string type = data.value("resultType", "");
  const json result = data.value("result", json());
  if (type == "scalar") return SampleValue(result);
  if (type == "vector") {
    if (!result.is_array() || result.empty()) return std::optional<double>();
    return SampleValue(result[0].value("value", json()));
  }
  return Status::InvalidArgument("Prometheus result of type \"" + type +
                                 "\": the query must return one number (a scalar or an "
                                 "instant vector)");
}

std::string ExpandQuery(const std::string& query, const std::string& version) {
  const std::string token = "{{version}}";
  std::string out = query;
  for (size_t at = out.find(token); at != std::string::npos;
       at = out.find(token, at + version.size())) {
    out.replace(at, token.size(), version);
  }
  return out;
}

StatusOr<std::optional<double>> HttpPrometheusSource::Query(const std::string& address,
                                                            const std::string& query) {
  std::shared_ptr<kube::HttpTransport> transport;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& t = transports_[address];
    if (!t) {
      kube::RestConfig config;
      config.server = address;
      while (!config.server.empty() && config.server.back() == '/') config.server.pop_back();
      KILN_ASSIGN_OR_RETURN(std::unique_ptr<kube::HttpTransport> made,
                            kube::NewHttpTransport(config));
      t = std::move(made);
    }
    transport = t;
  }
  kube::HttpRequest request;
  request.path = "/api/v1/query?query=" + kube::QueryEscape(query);
  request.timeout = std::chrono::seconds(5);
  KILN_ASSIGN_OR_RETURN(kube::HttpResponse response, transport->Do(request));
  if (response.status != 200 && response.status != 400 && response.status != 422) {
    return Status::Unavailable(address + "/api/v1/query: HTTP " + std::to_string(response.status));
  }
  return ParsePrometheusResponse(response.body);
}

}  // namespace kiln::modeldeployment
