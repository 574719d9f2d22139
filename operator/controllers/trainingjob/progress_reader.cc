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

std::optional<TrainingProgress> FinalProgress(const json& pod, const std::string& container) {
  if (!pod.is_object() || !pod.contains("status") || !pod["status"].is_object()) {
    return std::nullopt;
  }
  const json statuses = pod["status"].value("containerStatuses", json::array());
  if (!statuses.is_array()) return std::nullopt;
  for (const json& cs : statuses) {
    if (!cs.is_object() || cs.value("name", "") != container) continue;
    const json state = cs.value("state", json::object());
    if (!state.is_object() || !state.contains("terminated")) return std::nullopt;
    const json& terminated = state["terminated"];
    if (!terminated.is_object() || !terminated.contains("message") ||
        !terminated["message"].is_string()) {
      return std::nullopt;
    }
    const json message =
        json::parse(terminated["message"].get<std::string>(), nullptr, /*allow_exceptions=*/false);
    if (!message.is_object() || !message.contains("progress")) return std::nullopt;
    auto parsed = ParseProgress(message["progress"].dump());
    if (!parsed.ok()) return std::nullopt;
    return *parsed;
  }
  return std::nullopt;
}

void ApplyProgress(const TrainingProgress& progress, api::v1alpha1::TrainingJobStatus& status) {
  status.step = progress.step;
  if (progress.loss) status.loss = progress.loss;
  if (progress.validation_loss) status.validation_loss = progress.validation_loss;
  if (progress.tokens_per_second) status.tokens_per_second = progress.tokens_per_second;
  if (progress.last_checkpoint) status.last_checkpoint = progress.last_checkpoint;
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
