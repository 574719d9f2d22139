#include "kube/api_error.h"

#include <memory>

#include <nlohmann/json.hpp>

namespace kiln::kube {
namespace {

StatusCode CodeFor(int http, const std::string& reason) {
  if (reason == "NotFound" || http == 404) return StatusCode::kNotFound;
  if (reason == "AlreadyExists") return StatusCode::kAlreadyExists;
  if (reason == "Conflict" || http == 409) return StatusCode::kAborted;
  if (reason == "Forbidden" || http == 403) return StatusCode::kPermissionDenied;
  if (reason == "Unauthorized" || http == 401) return StatusCode::kUnauthenticated;
  if (reason == "Gone" || reason == "Expired" || http == 410)
    return StatusCode::kFailedPrecondition;
  if (reason == "TooManyRequests" || http == 429) return StatusCode::kResourceExhausted;
  if (reason == "Timeout" || reason == "ServerTimeout" || http == 504) {
    return StatusCode::kDeadlineExceeded;
  }
  if (http >= 500) return StatusCode::kUnavailable;
  return StatusCode::kInvalidArgument;  // Invalid, BadRequest, MethodNotAllowed, 415, ...
}

std::string DefaultReason(int http) {
  switch (http) {
    case 400:
      return "BadRequest";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 405:
      return "MethodNotAllowed";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 415:
      return "UnsupportedMediaType";
    case 422:
      return "Invalid";
    case 429:
      return "TooManyRequests";
    case 500:
      return "InternalError";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "Timeout";
    default:
      return "Unknown";
  }
}

// `j[key]` when it is a string, else "": a field of another type (a proxy's
// or a broken server's body) is no reason to throw out of error handling.
std::string StringField(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Status ErrorFromResponse(const HttpResponse& response, const std::string& verb) {
  auto err = std::make_shared<ApiError>();
  err->http_code = response.status;
  auto body = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && StringField(body, "kind") == "Status") {
    err->reason = StringField(body, "reason");
    err->message = StringField(body, "message");
    if (auto d = body.find("details"); d != body.end() && d->is_object()) {
      err->group = StringField(*d, "group");
      err->kind = StringField(*d, "kind");
      err->name = StringField(*d, "name");
      if (d->contains("retryAfterSeconds") && (*d)["retryAfterSeconds"].is_number_integer() &&
          (*d)["retryAfterSeconds"].get<int64_t>() >= 0) {
        err->retry_after = std::chrono::seconds((*d)["retryAfterSeconds"].get<int64_t>());
      }
      if (auto causes = d->find("causes"); causes != d->end() && causes->is_array()) {
        for (const auto& c : *causes) {
          if (!c.is_object()) continue;
          err->causes.push_back(
              {StringField(c, "reason"), StringField(c, "field"), StringField(c, "message")});
        }
      }
    }
  } else {
    std::string text = response.body.substr(0, 512);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    err->message = text;
  }
  if (err->reason.empty()) err->reason = DefaultReason(response.status);
  if (auto h = response.headers.find("retry-after"); h != response.headers.end()) {
    try {
      const long long seconds = std::stoll(h->second);
      // A negative value is no advice; the client's own backoff applies.
      if (seconds >= 0) err->retry_after = std::chrono::seconds(seconds);
    } catch (const std::exception&) {
      // An HTTP-date Retry-After; the client's own backoff applies instead.
    }
  }
  std::string msg = verb + ": " + std::to_string(response.status) + " " + err->reason;
  if (!err->message.empty()) msg += ": " + err->message;
  for (const auto& c : err->causes) {
    if (err->message.find(c.field) == std::string::npos || c.field.empty()) {
      msg += "; " + (c.field.empty() ? std::string() : c.field + ": ") + c.message;
    }
  }
  StatusCode code = CodeFor(response.status, err->reason);
  return Status(code, std::move(msg)).WithDetail(std::move(err));
}

const ApiError* GetApiError(const Status& status) { return status.detail<ApiError>(); }

namespace {
bool ReasonIs(const Status& s, const char* reason, int http) {
  const ApiError* e = GetApiError(s);
  return e != nullptr && (e->reason == reason || (http != 0 && e->http_code == http));
}
}  // namespace

bool IsNotFound(const Status& s) { return ReasonIs(s, "NotFound", 0); }
bool IsAlreadyExists(const Status& s) { return ReasonIs(s, "AlreadyExists", 0); }
bool IsConflict(const Status& s) { return ReasonIs(s, "Conflict", 0); }
bool IsInvalid(const Status& s) { return ReasonIs(s, "Invalid", 422); }
bool IsForbidden(const Status& s) { return ReasonIs(s, "Forbidden", 403); }
bool IsUnauthorized(const Status& s) { return ReasonIs(s, "Unauthorized", 401); }
bool IsTooManyRequests(const Status& s) { return ReasonIs(s, "TooManyRequests", 429); }
bool IsResourceExpired(const Status& s) {
  return ReasonIs(s, "Expired", 410) || ReasonIs(s, "Gone", 410);
}
bool IsTimeout(const Status& s) {
  return ReasonIs(s, "Timeout", 504) || ReasonIs(s, "ServerTimeout", 0);
}

}  // namespace kiln::kube
