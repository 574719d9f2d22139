// The JSON encoding helpers the generated API types (operator/api/v1alpha1)
// are written with: optional fields are omitted when unset and read only when
// present, required fields must be present, and a decoding failure names the
// field's path (e.g. "spec.workers.replicas: type must be number, but is
// string"). Decode<T> turns that into a Status at the module boundary.
#ifndef KILN_OPERATOR_API_CODEC_H_
#define KILN_OPERATOR_API_CODEC_H_

#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "base/statusor.h"

namespace kiln::api {

// Thrown by generated from_json functions: what() is "path: message".
class DecodeError : public std::runtime_error {
 public:
  DecodeError(std::string path, std::string message)
      : std::runtime_error(path.empty() ? message : path + ": " + message),
        path_(std::move(path)),
        message_(std::move(message)) {}
  const std::string& path() const { return path_; }
  const std::string& message() const { return message_; }

 private:
  std::string path_;
  std::string message_;
};

inline void ExpectObject(const nlohmann::json& j, const char* type) {
  if (!j.is_object()) {
    throw DecodeError("", std::string("expected an object (") + type + "), got " + j.type_name());
  }
}

namespace internal {

// nlohmann's messages start with "[json.exception.type_error.302] ".
inline std::string Clean(const char* what) {
  std::string s = what;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  return s;
}

template <class T>
void ReadValue(const nlohmann::json& j, const char* key, T& out) {
  try {
    j.get_to(out);
  } catch (const DecodeError& e) {
    throw DecodeError(e.path().empty() ? key : std::string(key) + "." + e.path(), e.message());
  } catch (const nlohmann::json::exception& e) {
    throw DecodeError(key, Clean(e.what()));
  }
}

}  // namespace internal

template <class T>
void Read(const nlohmann::json& j, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) throw DecodeError(key, "required");
  internal::ReadValue(*it, key, out);
}

template <class T>
void Read(const nlohmann::json& j, const char* key, std::optional<T>& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    out.reset();
    return;
  }
  T value{};
  internal::ReadValue(*it, key, value);
  out = std::move(value);
}

template <class T>
void Write(nlohmann::json& j, const char* key, const T& v) {
  j[key] = v;
}

template <class T>
void Write(nlohmann::json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}

// The top level of every kind: apiVersion, kind, metadata (kept as JSON),
// spec and the optional status.
template <class Kind>
void WriteObject(nlohmann::json& j, const Kind& v) {
  j = nlohmann::json::object();
  j["apiVersion"] = v.api_version;
  j["kind"] = v.kind;
  if (!v.metadata.empty()) j["metadata"] = v.metadata;
  Write(j, "spec", v.spec);
  Write(j, "status", v.status);
}

template <class Kind>
void ReadObject(const nlohmann::json& j, Kind& v) {
  ExpectObject(j, Kind::kKind);
  Read(j, "apiVersion", v.api_version);
  Read(j, "kind", v.kind);
  v.metadata = j.value("metadata", nlohmann::json::object());
  Read(j, "spec", v.spec);
  Read(j, "status", v.status);
}

// Decodes a whole object (e.g. a TrainingJob read from the API server);
// InvalidArgument naming the field on a mismatch.
template <class T>
StatusOr<T> Decode(const nlohmann::json& j) {
  try {
    return j.get<T>();
  } catch (const DecodeError& e) {
    return Status::InvalidArgument(e.what());
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(internal::Clean(e.what()));
  }
}

template <class T>
nlohmann::json Encode(const T& v) {
  return nlohmann::json(v);
}

}  // namespace kiln::api

#endif  // KILN_OPERATOR_API_CODEC_H_
