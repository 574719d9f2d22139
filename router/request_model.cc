#include "router/request_model.h"

#include <nlohmann/json.hpp>

namespace kiln::router {
namespace {

using nlohmann::json;

// Tracks depth and the last top-level key; keeps the top-level "model".
class ModelSax final : public nlohmann::json_sax<json> {
 public:
  explicit ModelSax(RequestModel& out) : out_(out) {}

  bool null() override { return Value("null"); }
  bool boolean(bool) override { return Value("boolean"); }
  bool number_integer(number_integer_t) override { return Value("number"); }
  bool number_unsigned(number_unsigned_t) override { return Value("number"); }
  bool number_float(number_float_t, const string_t&) override { return Value("number"); }
  bool string(string_t& s) override {
    if (AtModel()) {
      out_.model = std::move(s);
      seen_model_ = true;
    }
    return true;
  }
  bool binary(binary_t&) override { return Value("binary"); }
  bool start_object(std::size_t) override {
    if (depth_ == 0) top_is_object_ = true;
    Value("object");
    ++depth_;
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ == 1) at_model_key_ = k == "model";
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    Value("array");
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

  bool top_is_object() const { return top_is_object_; }

 private:
  bool AtModel() const { return depth_ == 1 && at_model_key_; }
  bool Value(const char* type) {
    if (AtModel() && !seen_model_) {
      out_.error = RequestModel::Error::kModelNotString;
      out_.model_type = type;
    }
    return true;
  }

  RequestModel& out_;
  int depth_ = 0;
  bool at_model_key_ = false;
  bool seen_model_ = false;
  bool top_is_object_ = false;
};

}  // namespace

RequestModel ReadRequestModel(const std::string& body) {
  RequestModel r;
  ModelSax sax(r);
  if (!json::sax_parse(body, &sax)) {
    return {RequestModel::Error::kNotJson, "", ""};
  }
  if (!sax.top_is_object()) return {RequestModel::Error::kNotObject, "", ""};
  if (r.error != RequestModel::Error::kNone) r.model.clear();
  return r;
}

uint64_t ScanCompletionTokens(const std::string& body) {
  static constexpr char kKey[] = "\"completion_tokens\"";
  size_t at = body.find(kKey);
  if (at == std::string::npos) return 0;
  at += sizeof kKey - 1;
  while (at < body.size() && (body[at] == ' ' || body[at] == ':' || body[at] == '\n')) ++at;
  uint64_t n = 0;
  for (; at < body.size() && body[at] >= '0' && body[at] <= '9'; ++at) {
    n = n * 10 + static_cast<uint64_t>(body[at] - '0');
    if (n > (uint64_t{1} << 40)) return 0;
  }
  return n;
}

}  // namespace kiln::router
