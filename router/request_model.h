// RequestModel: what the router reads of a request body — whether it is a
// JSON object and its top-level "model" — without building the document: one
// pass that validates the whole body as the worker's parser (nlohmann's)
// reads JSON and keeps nothing but the model (a repeated "model" counts by
// its last value, as in the document the worker builds). nlohmann's SAX
// reader did this before at about ten allocations a request; the fuzz
// harness fuzz/openai_request_fuzz.cc checks the two agree. And the
// usage.completion_tokens of a whole reply, found by a scan rather than a
// parse.
#ifndef KILN_ROUTER_REQUEST_MODEL_H_
#define KILN_ROUTER_REQUEST_MODEL_H_

#include <cstdint>
#include <string>

namespace kiln::router {

struct RequestModel {
  enum class Error { kNone, kNotJson, kNotObject, kModelNotString };
  Error error = Error::kNone;
  std::string model;       // "" when the body has none.
  std::string model_type;  // For kModelNotString: "number", "object", ...
};

RequestModel ReadRequestModel(const std::string& body);

// The number after the first "completion_tokens": in `body` (0 if none).
uint64_t ScanCompletionTokens(const std::string& body);

}  // namespace kiln::router

#endif  // KILN_ROUTER_REQUEST_MODEL_H_
