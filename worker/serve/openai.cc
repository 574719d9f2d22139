#include "worker/serve/openai.h"

#include <set>

namespace kiln::serve {
namespace {

using nlohmann::json;

RequestError Bad(const std::string& param, const std::string& message) {
  return {400, message, param};
}

}  // namespace

std::variant<CompletionRequest, RequestError> ParseCompletionRequest(
    const std::string& body, const std::string& model_name, const model::GptConfig& config) {
  // A raw NUL is never valid JSON (inside a string it must be escaped), but
  // nlohmann's parser takes one as the end of the input and would accept a
  // body with bytes after it, which kiln-router's reader (and any other JSON
  // parser) refuses: both must read a body alike (fuzz/openai_request_fuzz.cc).
  if (body.find('\0') != std::string::npos) {
    return Bad("", "the request body is not valid JSON (it holds a NUL byte)");
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return Bad("", "the request body is not valid JSON");
  if (!j.is_object()) return Bad("", "the request body must be a JSON object");
  static const std::set<std::string> kKnown = {"model",
                                               "prompt",
                                               "max_tokens",
                                               "temperature",
                                               "top_p",
                                               "top_k",
                                               "seed",
                                               "stop",
                                               "stream",
                                               "user",
                                               "n",
                                               "best_of",
                                               "echo",
                                               "logprobs",
                                               "presence_penalty",
                                               "frequency_penalty",
                                               "ignore_eos"};
  for (auto& [key, value] : j.items()) {
    if (kKnown.count(key) == 0) return Bad(key, "unknown field '" + key + "'");
  }
  CompletionRequest out;
  GenerateRequest& g = out.generate;
  if (j.contains("model")) {
    if (!j["model"].is_string()) return Bad("model", "model must be a string");
    if (j["model"] != model_name) {
      return RequestError{404,
                          "the model '" + j["model"].get<std::string>() +
                              "' does not exist; this server serves '" + model_name + "'",
                          "model"};
    }
  }
  if (!j.contains("prompt")) return Bad("prompt", "prompt is required");
  const json* prompt = &j["prompt"];
  if (prompt->is_array()) {
    if (prompt->size() != 1) return Bad("prompt", "prompt must be a string or an array of one");
    prompt = &(*prompt)[0];
  }
  if (!prompt->is_string()) return Bad("prompt", "prompt must be a string");
  const std::string text = prompt->get<std::string>();
  if (text.empty()) return Bad("prompt", "prompt must not be empty");
  for (char c : text) g.prompt.push_back(static_cast<unsigned char>(c));
  if (static_cast<int>(g.prompt.size()) >= config.max_seq_len) {
    return Bad("prompt", "the prompt has " + std::to_string(g.prompt.size()) +
                             " tokens; this model's context is " +
                             std::to_string(config.max_seq_len) +
                             " and at least one must be left to generate");
  }
  auto integer = [&](const char* key, int64_t lo, int64_t hi, int64_t& value) -> std::string {
    if (!j.contains(key) || j[key].is_null()) return "";
    if (!j[key].is_number_integer()) return std::string(key) + " must be an integer";
    value = j[key].get<int64_t>();
    if (value < lo || value > hi) {
      return std::string(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
             "], got " + std::to_string(value);
    }
    return "";
  };
  auto number = [&](const char* key, double lo, double hi, double& value) -> std::string {
    if (!j.contains(key) || j[key].is_null()) return "";
    if (!j[key].is_number()) return std::string(key) + " must be a number";
    value = j[key].get<double>();
    if (!(value >= lo && value <= hi)) {
      return std::string(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
             "]";
    }
    return "";
  };
  int64_t max_tokens = 16, top_k = 0, seed = 0, n = 1, best_of = 1;
  const int64_t room = config.max_seq_len - static_cast<int64_t>(g.prompt.size());
  if (auto e = integer("max_tokens", 1, room, max_tokens); !e.empty()) {
    return Bad("max_tokens", e + " (the context has room for " + std::to_string(room) +
                                 " tokens after this prompt)");
  }
  if (auto e = integer("top_k", 0, config.vocab_size, top_k); !e.empty()) return Bad("top_k", e);
  if (auto e = integer("seed", INT64_MIN, INT64_MAX, seed); !e.empty()) return Bad("seed", e);
  if (auto e = integer("n", 1, 1, n); !e.empty()) return Bad("n", e + ": only n=1 is supported");
  if (auto e = integer("best_of", 1, 1, best_of); !e.empty()) {
    return Bad("best_of", e + ": only best_of=1 is supported");
  }
  double temperature = 1.0, top_p = 1.0, presence = 0, frequency = 0;
  if (auto e = number("temperature", 0, 2, temperature); !e.empty()) return Bad("temperature", e);
  if (auto e = number("top_p", 0, 1, top_p); !e.empty()) return Bad("top_p", e);
  if (top_p == 0) return Bad("top_p", "top_p must be above 0");
  if (auto e = number("presence_penalty", 0, 0, presence); !e.empty()) {
    return Bad("presence_penalty", "presence_penalty is not supported (only 0)");
  }
  if (auto e = number("frequency_penalty", 0, 0, frequency); !e.empty()) {
    return Bad("frequency_penalty", "frequency_penalty is not supported (only 0)");
  }
  if (j.contains("echo") && !(j["echo"].is_boolean() && !j["echo"].get<bool>())) {
    return Bad("echo", "echo is not supported (only false)");
  }
  if (j.contains("logprobs") && !j["logprobs"].is_null()) {
    return Bad("logprobs", "logprobs is not supported (only null)");
  }
  if (j.contains("user") && !j["user"].is_string()) return Bad("user", "user must be a string");
  if (j.contains("ignore_eos")) {
    if (!j["ignore_eos"].is_boolean()) return Bad("ignore_eos", "ignore_eos must be a boolean");
    g.ignore_eos = j["ignore_eos"].get<bool>();
  }
  if (j.contains("stream")) {
    if (!j["stream"].is_boolean()) return Bad("stream", "stream must be a boolean");
    out.stream = j["stream"].get<bool>();
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& stop = j["stop"];
    if (stop.is_string()) {
      g.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array() && stop.size() <= 4) {
      for (const auto& s : stop) {
        if (!s.is_string()) return Bad("stop", "stop must be a string or an array of strings");
        g.stop.push_back(s.get<std::string>());
      }
    } else {
      return Bad("stop", "stop must be a string or an array of at most 4 strings");
    }
    for (const auto& s : g.stop) {
      if (s.empty()) return Bad("stop", "stop sequences must not be empty");
    }
  }
  g.max_tokens = static_cast<int>(max_tokens);
  g.sampling = {.temperature = temperature,
                .top_k = static_cast<int>(top_k),
                .top_p = top_p,
                .seed = static_cast<uint64_t>(seed)};
  return out;
}

json ErrorJson(int status, const std::string& message, const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", status < 500 ? "invalid_request_error" : "server_error"},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", status}}}};
}

json ChunkJson(const std::string& id, int64_t created, const std::string& model,
               const std::string& text, FinishReason finish) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices",
           {{{"index", 0},
             {"text", text},
             {"logprobs", nullptr},
             {"finish_reason",
              finish == FinishReason::kNone ? json(nullptr) : json(FinishReasonName(finish))}}}}};
}

json CompletionJson(const std::string& id, int64_t created, const std::string& model,
                    const std::string& text, FinishReason finish, int prompt_tokens,
                    int completion_tokens, int cached_prompt_tokens) {
  json j = ChunkJson(id, created, model, text, finish);
  j["usage"] = {{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"total_tokens", prompt_tokens + completion_tokens},
                {"prompt_tokens_details", {{"cached_tokens", cached_prompt_tokens}}}};
  return j;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

size_t CompleteUtf8Prefix(const std::string& text) {
  // Look back at most 3 bytes for the start of an unfinished sequence.
  const size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // A continuation byte: keep looking.
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

}  // namespace kiln::serve
