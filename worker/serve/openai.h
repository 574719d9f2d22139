// The OpenAI completions wire format (POST /v1/completions): strict parsing
// of requests into engine requests, and the JSON of responses, stream chunks
// and errors. Pure functions; the HTTP side is server.h.
//
// Accepted fields: model, prompt (a string, or an array of one string),
// max_tokens, temperature, top_p, top_k and ignore_eos (extensions, as
// vLLM's), seed, stop (a string or up to 4), stream, user, and n / best_of / echo / logprobs /
// presence_penalty / frequency_penalty only at their defaults. Anything else,
// or a field of the wrong type or out of range, is refused naming the field.
#ifndef KILN_WORKER_SERVE_OPENAI_H_
#define KILN_WORKER_SERVE_OPENAI_H_

#include <cstdint>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "worker/model/gpt.h"
#include "worker/serve/engine.h"

namespace kiln::serve {

struct CompletionRequest {
  GenerateRequest generate;
  bool stream = false;
};

// A refused request: the HTTP status, the message and the offending field.
struct RequestError {
  int status = 400;
  std::string message;
  std::string param;  // Empty when no single field is at fault.
};

// Parses `body` for a model named `model_name` of shape `config` (prompts
// are bytes: kiln's byte tokenizer). The default max_tokens is 16, as
// OpenAI's.
std::variant<CompletionRequest, RequestError> ParseCompletionRequest(
    const std::string& body, const std::string& model_name, const model::GptConfig& config);

// {"error": {"message", "type", "param", "code"}}; type is
// invalid_request_error for 4xx and server_error otherwise.
nlohmann::json ErrorJson(int status, const std::string& message, const std::string& param = "");

// The whole response of a non-streaming request. usage carries OpenAI's
// prompt_tokens_details.cached_tokens: the prompt tokens the prefix cache
// held.
nlohmann::json CompletionJson(const std::string& id, int64_t created, const std::string& model,
                              const std::string& text, FinishReason finish, int prompt_tokens,
                              int completion_tokens, int cached_prompt_tokens = 0);

// One server-sent-event chunk of a stream (finish kNone while it goes on).
nlohmann::json ChunkJson(const std::string& id, int64_t created, const std::string& model,
                         const std::string& text, FinishReason finish);

// JSON text of `j` with invalid UTF-8 replaced (the model emits bytes).
std::string Dump(const nlohmann::json& j);

// The length of the longest prefix of `text` that does not end inside a
// UTF-8 sequence, so streamed pieces never split a character.
size_t CompleteUtf8Prefix(const std::string& text);

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_OPENAI_H_
