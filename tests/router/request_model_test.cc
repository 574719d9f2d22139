#include "router/request_model.h"

#include <catch2/catch.hpp>

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

TEST_CASE("a reply's completion tokens are found by a scan", "[router]") {
  CHECK(ScanCompletionTokens(R"({"usage": {"prompt_tokens": 4, "completion_tokens": 17}})") == 17);
  CHECK(ScanCompletionTokens(R"({"usage":{"completion_tokens":3}})") == 3);
  CHECK(ScanCompletionTokens(R"({"choices": []})") == 0);
  CHECK(ScanCompletionTokens(R"({"completion_tokens": "x"})") == 0);
}

}  // namespace
}  // namespace kiln::router
