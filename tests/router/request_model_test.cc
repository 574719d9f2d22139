#include "router/request_model.h"

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace kiln::router {
namespace {

TEST_CASE("the request's model is read without keeping the document", "[router]") {
  RequestModel m = ReadRequestModel(
      R"({"prompt": {"model": "inner"}, "model": "chat", "messages": [{"model": "x"}]})");
  CHECK(m.error == RequestModel::Error::kNone);
  CHECK(m.model == "chat");
  CHECK(ReadRequestModel(R"({"prompt": "hi"})").model.empty());
  CHECK(ReadRequestModel("{}").error == RequestModel::Error::kNone);
  CHECK(ReadRequestModel(R"({"model": "caf\u00e9"})").model == "caf\xc3\xa9");

  CHECK(ReadRequestModel("{not json").error == RequestModel::Error::kNotJson);
  CHECK(ReadRequestModel(R"({"model": "chat"} trailing)").error == RequestModel::Error::kNotJson);
  CHECK(ReadRequestModel("[1, 2]").error == RequestModel::Error::kNotObject);
  CHECK(ReadRequestModel("\"chat\"").error == RequestModel::Error::kNotObject);
  for (const auto& [body, type] : std::vector<std::pair<std::string, std::string>>{
           {R"({"model": 7})", "number"},
           {R"({"model": 7.5})", "number"},
           {R"({"model": null})", "null"},
           {R"({"model": true})", "boolean"},
           {R"({"model": ["chat"]})", "array"},
           {R"({"model": {"name": "chat"}})", "object"}}) {
    RequestModel bad = ReadRequestModel(body);
    INFO(body);
    CHECK(bad.error == RequestModel::Error::kModelNotString);
    CHECK(bad.model_type == type);
    CHECK(bad.model.empty());
  }
}

// What the worker's parser makes of `body`: the error and model the router
// must read (as fuzz/openai_request_fuzz.cc checks).
RequestModel FromDocument(const std::string& body) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return {RequestModel::Error::kNotJson, "", ""};
  if (!j.is_object()) return {RequestModel::Error::kNotObject, "", ""};
  auto it = j.find("model");
  if (it == j.end()) return {};
  if (!it->is_string()) return {RequestModel::Error::kModelNotString, "", ""};
  return {RequestModel::Error::kNone, it->get<std::string>(), ""};
}

void CheckAgrees(const std::string& body) {
  const RequestModel want = FromDocument(body);
  const RequestModel got = ReadRequestModel(body);
  INFO(nlohmann::json(body).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
  CHECK(static_cast<int>(got.error) == static_cast<int>(want.error));
  CHECK(got.model == want.model);
}

TEST_CASE("the router reads a body's JSON exactly as the worker's parser does", "[router]") {
  const std::vector<std::string> cases = {
      "",
      " ",
      "{",
      "}",
      "{}",
      "[]",
      "[",
      "[1,]",
      "{,}",
      R"({"a":1,})",
      R"({"a" 1})",
      R"({"a":})",
      R"({1:2})",
      "null",
      "true",
      "false",
      "nul",
      "tru",
      "falsey",
      "0",
      "-0",
      "01",
      "1.",
      ".5",
      "+1",
      "-",
      "1e",
      "1e+",
      "1E5",
      "1.5e-3",
      "1e308",
      "1e309",
      "-1e309",
      "1e-400",
      "123456789012345678901234567890",
      std::string(400, '9'),
      "1" + std::string(308, '0'),
      "\xEF\xBB\xBF{\"model\": \"a\"}",
      "\xEF\xBB{}",
      "\xEF{}",
      " \xEF\xBB\xBF{}",
      R"({"model": "a", "model": "b"})",
      R"({"model": 1, "model": "b"})",
      R"({"model": "a", "model": 1})",
      R"({"model": "a", "model": null})",
      R"({"\u006dodel": "esc"})",
      R"({"mod\u0065l": 5})",
      R"({"model\u0000": "x"})",
      R"({"model": "\ud83d\ude00"})",
      R"({"model": "\ud83d"})",
      R"({"model": "\ude00"})",
      R"({"model": "\ud83d\u0041"})",
      R"({"model": "\u00"})",
      R"({"model": "\x41"})",
      R"({"model": "a\/b\\c\"d\b\f\n\r\t"})",
      R"({"model": "\u0000"})",
      std::string("{\"model\": \"a\0b\"}", 14),
      "{\"model\": \"tab\there\"}",
      "{\"model\": \"\xC3\xA9\"}",
      "{\"model\": \"\xC0\xAF\"}",
      "{\"model\": \"\xE0\x80\xAF\"}",
      "{\"model\": \"\xED\xA0\x80\"}",
      "{\"model\": \"\xF4\x90\x80\x80\"}",
      "{\"model\": \"\xF0\x9F\x98\x80\"}",
      "{\"model\": \"\xFF\"}",
      "{\"model\": \"\xC3\"}",
      R"({"model": [1, {"a": [true, false, null]}], "x": {}})",
      R"({"model": "m"}  )",
      "\t\r\n{\"model\":\"m\"}\n",
      R"({"model": "m"} x)",
      R"({"model": "m"}{})",
      R"({"a": [1 2]})",
      R"({"a": {"b" "c"}})",
      R"({"a": "unterminated)",
      std::string(5000, '[') + std::string(5000, ']'),
      std::string(5000, '[') + "1",
      R"({"prompt": "hi", "max_tokens": 16, "model": "chat", "stream": true})"};
  for (const std::string& body : cases) CheckAgrees(body);

  // Mutations of small documents: bytes replaced, inserted, dropped.
  const std::vector<std::string> seeds = {
      R"({"model": "chat", "prompt": "hi", "max_tokens": 16})",
      R"({"model": "caf\u00e9", "stream": false, "n": [1.5e3, -0, null]})",
      R"({"messages": [{"role": "user", "content": "\ud83d\ude00"}], "model": "x"})"};
  const std::string alphabet = "{}[]\",:\\/ntrfue0123456789+-.Ee \x80\xC3\xA9\xED\xF4\x01";
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string body = seeds[static_cast<size_t>(i) % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !body.empty(); ++e) {
      const size_t at = rng() % body.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          body[at] = c;
          break;
        case 1:
          body.insert(at, 1, c);
          break;
        default:
          body.erase(at, 1);
      }
    }
    CheckAgrees(body);
  }
}

TEST_CASE("a reply's completion tokens are found by a scan", "[router]") {
  CHECK(ScanCompletionTokens(R"({"usage": {"prompt_tokens": 4, "completion_tokens": 17}})") == 17);
  CHECK(ScanCompletionTokens(R"({"usage":{"completion_tokens":3}})") == 3);
  CHECK(ScanCompletionTokens(R"({"choices": []})") == 0);
  CHECK(ScanCompletionTokens(R"({"completion_tokens": "x"})") == 0);
}

}  // namespace
}  // namespace kiln::router
