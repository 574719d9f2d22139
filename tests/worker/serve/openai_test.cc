// The completions wire format: what parses into an engine request, what is
// refused (naming the field), and the UTF-8 boundary of streamed text.
#include "worker/serve/openai.h"

#include <catch2/catch.hpp>

namespace kiln::serve {
namespace {

model::GptConfig Config() {
  model::GptConfig c;
  c.max_seq_len = 64;
  c.vocab_size = 257;
  return c;
}

TEST_CASE("a completion request parses into an engine request", "[serve]") {
  auto r = ParseCompletionRequest(
      R"({"model": "m", "prompt": ["héllo"], "max_tokens": 7, "temperature": 0.5,
          "top_p": 0.9, "top_k": 40, "seed": 123, "stop": ["\n\n", "END"], "stream": true,
          "user": "u", "n": 1, "echo": false, "logprobs": null, "presence_penalty": 0})",
      "m", Config());
  REQUIRE(std::holds_alternative<CompletionRequest>(r));
  const auto& c = std::get<CompletionRequest>(r);
  CHECK(c.stream);
  CHECK(c.generate.prompt.size() == 6);  // 'é' is two bytes.
  CHECK(c.generate.prompt[1] == 0xC3);
  CHECK(c.generate.max_tokens == 7);
  CHECK(c.generate.sampling.temperature == 0.5);
  CHECK(c.generate.sampling.top_p == 0.9);
  CHECK(c.generate.sampling.top_k == 40);
  CHECK(c.generate.sampling.seed == 123);
  CHECK(c.generate.stop == std::vector<std::string>{"\n\n", "END"});
  auto d = ParseCompletionRequest(R"({"prompt": "x"})", "m", Config());
  REQUIRE(std::holds_alternative<CompletionRequest>(d));
  CHECK(std::get<CompletionRequest>(d).generate.max_tokens == 16);
  CHECK_FALSE(std::get<CompletionRequest>(d).generate.ignore_eos);
  auto e = ParseCompletionRequest(R"({"prompt": "x", "ignore_eos": true})", "m", Config());
  REQUIRE(std::holds_alternative<CompletionRequest>(e));
  CHECK(std::get<CompletionRequest>(e).generate.ignore_eos);
  CHECK_FALSE(std::get<CompletionRequest>(d).stream);
}

TEST_CASE("refused completion requests name the field", "[serve]") {
  auto refused = [](const std::string& body, const std::string& param, int status = 400) {
    auto r = ParseCompletionRequest(body, "m", Config());
    INFO(body);
    REQUIRE(std::holds_alternative<RequestError>(r));
    CHECK(std::get<RequestError>(r).param == param);
    CHECK(std::get<RequestError>(r).status == status);
  };
  refused(R"({"prompt": "x", "max_tokens": 64})", "max_tokens");  // Room for 63.
  refused(R"({"prompt": "x", "top_k": -1})", "top_k");
  refused(R"({"prompt": "x", "seed": 1.5})", "seed");
  refused(R"({"prompt": "x", "echo": true})", "echo");
  refused(R"({"prompt": "x", "logprobs": 3})", "logprobs");
  refused(R"({"prompt": "x", "frequency_penalty": 0.5})", "frequency_penalty");
  refused(R"({"prompt": "x", "stop": ""})", "stop");
  refused(R"({"prompt": "x", "stop": [1]})", "stop");
  refused(R"({"prompt": ["a", "b"]})", "prompt");
  refused(R"({"prompt": ""})", "prompt");
  refused(R"({"prompt": "x", "model": 3})", "model");
  refused(R"({"prompt": "x", "model": "other"})", "model", 404);
  refused(R"({"prompt": "x", "user": 1})", "user");
  refused(R"({"prompt": "x", "ignore_eos": 1})", "ignore_eos");
  // A NUL ends nlohmann's input, but it is no JSON: the body is refused,
  // whatever follows (the fuzzer's find: kiln-router refused it, the worker
  // read "object").
  refused(std::string("\"object\"\0\0%", 11), "");
  refused(std::string("{\"prompt\": \"x\"}\0garbage", 23), "");
}

TEST_CASE("streamed text never ends inside a UTF-8 character", "[serve]") {
  CHECK(CompleteUtf8Prefix("") == 0);
  CHECK(CompleteUtf8Prefix("abc") == 3);
  CHECK(CompleteUtf8Prefix("a\xC3") == 1);          // First byte of 'é'.
  CHECK(CompleteUtf8Prefix("a\xC3\xA9") == 3);      // All of it.
  CHECK(CompleteUtf8Prefix("a\xE2\x82") == 1);      // Two of '€''s three.
  CHECK(CompleteUtf8Prefix("a\xF0\x9F\x98") == 1);  // Three of an emoji's four.
  CHECK(CompleteUtf8Prefix("a\xF0\x9F\x98\x80") == 5);
  // Stray continuation bytes are not held back forever.
  CHECK(CompleteUtf8Prefix("\x80\x80\x80\x80") == 4);
  CHECK(Dump(nlohmann::json("bad \xFF byte")) == "\"bad \xEF\xBF\xBD byte\"");
}

}  // namespace
}  // namespace kiln::serve
