// Fuzzes the JSON bodies of OpenAI completion requests: kiln-worker serve's
// strict parser (worker/serve/openai.h) and kiln-router's reading of the
// body's "model" (router/request_model.h), which must agree with the JSON
// document the worker sees: the router may not send a request to one model
// that the worker reads as naming another. Also the router's scan of a
// reply's usage.completion_tokens.
#include <cstdint>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "router/request_model.h"
#include "worker/model/gpt.h"
#include "worker/serve/openai.h"

namespace {

using kiln::router::RequestModel;

// The router's answer for `body`, from the document nlohmann builds (what
// the worker parses; a repeated key keeps its last value). A body with a NUL
// byte is no JSON to either (nlohmann alone would stop at the NUL and accept
// what came before it; the worker refuses such a body first).
void CheckRouterAgrees(const std::string& body, const RequestModel& got) {
  const bool nul = body.find('\0') != std::string::npos;
  nlohmann::json j = nul ? nlohmann::json(nlohmann::json::value_t::discarded)
                         : nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  RequestModel::Error want = RequestModel::Error::kNone;
  std::string model;
  if (j.is_discarded()) {
    want = RequestModel::Error::kNotJson;
  } else if (!j.is_object()) {
    want = RequestModel::Error::kNotObject;
  } else if (auto it = j.find("model"); it != j.end()) {
    if (it->is_string()) {
      model = it->get<std::string>();
    } else {
      want = RequestModel::Error::kModelNotString;
    }
  }
  if (got.error != want || got.model != model) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  kiln::model::GptConfig config;
  config.max_seq_len = 64;
  auto parsed = kiln::serve::ParseCompletionRequest(body, "chat", config);
  if (auto* request = std::get_if<kiln::serve::CompletionRequest>(&parsed)) {
    const auto& g = request->generate;
    // A request the engine accepts fits the context with room to generate.
    if (g.prompt.empty() || g.max_tokens < 1 ||
        static_cast<int64_t>(g.prompt.size()) + g.max_tokens > config.max_seq_len) {
      __builtin_trap();
    }
    for (int32_t token : g.prompt) {
      if (token < 0 || token >= config.vocab_size) __builtin_trap();
    }
  }
  CheckRouterAgrees(body, kiln::router::ReadRequestModel(body));
  (void)kiln::router::ScanCompletionTokens(body);  // Any count is fine; only crashes count.
  return 0;
}
