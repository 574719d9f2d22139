#include "operator/controllers/trainingjob/progress_reader.h"

#include <chrono>

#include <nlohmann/json.hpp>

#include "base/context.h"

namespace kiln::trainingjob {
namespace {

using nlohmann::json;

constexpr std::chrono::seconds kReadTimeout{5};

std::optional<double> Number(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

}  // namespace

StatusOr<TrainingProgress> ParseProgress(const std::string& body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
    return Status::InvalidArgument("not a kiln-worker progress object: " + body.substr(0, 200));
  }
  TrainingProgress p;
  p.step = j["step"].get<int64_t>();
  p.loss = Number(j, "loss");
  p.validation_loss = Number(j, "validationLoss");
  p.tokens_per_second = Number(j, "tokensPerSecond");
  if (auto it = j.find("lastCheckpoint"); it != j.end() && it->is_object()) {
    const json& c = *it;
    if (c.contains("step") && c["step"].is_number_integer() && c.contains("uri") &&
        c["uri"].is_string()) {
      api::v1alpha1::CheckpointRef ref;
      ref.step = c["step"].get<int64_t>();
      ref.uri = c["uri"].get<std::string>();
      if (c.contains("time") && c["time"].is_string()) ref.time = c["time"].get<std::string>();
      ref.loss = Number(c, "loss");
      p.last_checkpoint = ref;
    }
  }
  return p;
}

StatusOr<TrainingProgress> PodProxyProgressReader::Read(fleet::Member& member,
                                                        const std::string& ns,
                                                        const std::string& pod, int32_t port) {
  kube::HttpRequest request;
  request.path =
      "/api/v1/namespaces/" + ns + "/pods/" + pod + ":" + std::to_string(port) + "/proxy/progress";
  // A progress read is advice for the status: a slow or unready worker
  // must not hold the reconcile up, retries (a 503 from the proxy) included.
  const Context* outer = Context::Current();
  ScopedContext bounded((outer != nullptr ? *outer : Context()).WithTimeout(kReadTimeout));
  KILN_ASSIGN_OR_RETURN(kube::HttpResponse response, member.client().Request(request));
  return ParseProgress(response.body);
}

}  // namespace kiln::trainingjob
