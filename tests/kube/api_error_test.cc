// kube/api_error.h: a non-2xx response becomes the Status code its
// reason (or, without one, its HTTP code) maps to, with the server's message,
// the field causes and Retry-After kept; the predicates answer from the
// attached ApiError only.
#include "kube/api_error.h"

#include <string>

#include <catch2/catch.hpp>

namespace kiln::kube {
namespace {

HttpResponse Response(int status, std::string body,
                      std::map<std::string, std::string> headers = {}) {
  return HttpResponse{.status = status, .headers = std::move(headers), .body = std::move(body)};
}

std::string StatusBody(const std::string& reason, const std::string& message,
                       const std::string& details = "{}") {
  return R"({"kind":"Status","apiVersion":"v1","status":"Failure","reason":")" + reason +
         R"(","message":")" + message + R"(","details":)" + details + "}";
}

TEST_CASE("API errors map reasons and HTTP codes to Status codes", "[kube]") {
  struct Case {
    int http;
    std::string body;
    StatusCode want;
    bool (*predicate)(const Status&);
  };
  const Case cases[] = {
      {404, StatusBody("NotFound", "not found"), StatusCode::kNotFound, IsNotFound},
      {404, "404 page not found\n", StatusCode::kNotFound, IsNotFound},
      {409, StatusBody("AlreadyExists", "exists"), StatusCode::kAlreadyExists, IsAlreadyExists},
      {409, StatusBody("Conflict", "modified"), StatusCode::kAborted, IsConflict},
      {409, "", StatusCode::kAborted, IsConflict},
      {422, StatusBody("Invalid", "invalid"), StatusCode::kInvalidArgument, IsInvalid},
      {400, StatusBody("BadRequest", "bad"), StatusCode::kInvalidArgument, nullptr},
      {403, "forbidden\n", StatusCode::kPermissionDenied, IsForbidden},
      {401, "", StatusCode::kUnauthenticated, IsUnauthorized},
      {429, StatusBody("TooManyRequests", "slow down"), StatusCode::kResourceExhausted,
       IsTooManyRequests},
      {410, StatusBody("Expired", "too old resource version"), StatusCode::kFailedPrecondition,
       IsResourceExpired},
      {410, "", StatusCode::kFailedPrecondition, IsResourceExpired},
      {504, "", StatusCode::kDeadlineExceeded, IsTimeout},
      {500, StatusBody("ServerTimeout", "try later"), StatusCode::kDeadlineExceeded, IsTimeout},
      {500, StatusBody("InternalError", "boom"), StatusCode::kUnavailable, nullptr},
      {503, "", StatusCode::kUnavailable, nullptr},
  };
  bool (*const all[])(const Status&) = {IsNotFound,        IsAlreadyExists,   IsConflict,
                                        IsInvalid,         IsForbidden,       IsUnauthorized,
                                        IsTooManyRequests, IsResourceExpired, IsTimeout};
  for (const Case& c : cases) {
    INFO(c.http << " " << c.body);
    const Status s = ErrorFromResponse(Response(c.http, c.body), "GET /apis/kiln.dev/v1alpha1/x");
    CHECK(s.code() == c.want);
    REQUIRE(GetApiError(s) != nullptr);
    CHECK(GetApiError(s)->http_code == c.http);
    CHECK_THAT(s.message(),
               Catch::StartsWith("GET /apis/kiln.dev/v1alpha1/x: " + std::to_string(c.http) + " "));
    // Exactly the matching predicate holds (none for the codes without one).
    for (auto* p : all) CHECK(p(s) == (p == c.predicate));
  }
}

TEST_CASE("API errors keep the server's message, details and field causes", "[kube]") {
  const Status s = ErrorFromResponse(
      Response(422, StatusBody("Invalid", "TrainingJob.kiln.dev \\\"x\\\" is invalid",
                               R"({"name":"x","group":"kiln.dev","kind":"TrainingJob","causes":[
                {"reason":"FieldValueRequired","field":"spec.image","message":"Required value"},
                {"reason":"FieldValueInvalid","field":"spec.workers","message":"must be >= 1"}]})")),
      "POST /apis/kiln.dev/v1alpha1/namespaces/a/trainingjobs");
  const ApiError* e = GetApiError(s);
  REQUIRE(e != nullptr);
  CHECK(e->reason == "Invalid");
  CHECK(e->name == "x");
  CHECK(e->group == "kiln.dev");
  CHECK(e->kind == "TrainingJob");
  REQUIRE(e->causes.size() == 2);
  CHECK(e->causes[1].field == "spec.workers");
  CHECK(e->causes[1].type == "FieldValueInvalid");
  CHECK_THAT(s.message(), Catch::Contains("TrainingJob.kiln.dev \"x\" is invalid"));
  CHECK_THAT(s.message(), Catch::Contains("spec.image: Required value"));
  CHECK_THAT(s.message(), Catch::Contains("spec.workers: must be >= 1"));
}

TEST_CASE("API errors keep Retry-After from the header or the details", "[kube]") {
  auto retry = [](const HttpResponse& r) {
    return GetApiError(ErrorFromResponse(r, "GET /x"))->retry_after;
  };
  CHECK(retry(Response(429, "", {{"retry-after", "7"}})) == std::chrono::seconds(7));
  CHECK(retry(Response(429, StatusBody("TooManyRequests", "x", R"({"retryAfterSeconds":3})"))) ==
        std::chrono::seconds(3));
  CHECK(!retry(Response(429, "", {{"retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"}})));
  CHECK(!retry(Response(429, "", {{"retry-after", "-5"}})));
  CHECK(!retry(Response(429, StatusBody("TooManyRequests", "x", R"({"retryAfterSeconds":-1})"))));
  CHECK(!retry(Response(429, "")));
}

TEST_CASE("API errors cut long non-JSON bodies and leave other errors alone", "[kube]") {
  const Status s = ErrorFromResponse(Response(502, std::string(5000, 'x') + "\n"), "GET /x");
  CHECK(s.code() == StatusCode::kUnavailable);
  CHECK(GetApiError(s)->message.size() == 512);
  CHECK(GetApiError(s)->reason == "Unknown");
  const Status local = Status::NotFound("no such file");
  CHECK(GetApiError(local) == nullptr);
  CHECK_FALSE(IsNotFound(local));
  CHECK_FALSE(IsNotFound(Status::Ok()));
}

// Found by fuzz/api_error_fuzz.cc: a Status body whose fields had other
// types (a number for "reason", a string for "causes") threw
// nlohmann::json::type_error out of the client instead of giving an error.
TEST_CASE("API errors read Status bodies whose fields have the wrong types", "[kube]") {
  const Status s = ErrorFromResponse(Response(422, R"({"kind":"Status","reason":410,"message":["m"],
                        "details":{"name":1,"group":null,"kind":{},"causes":"x"}})"),
                                     "GET /x");
  const ApiError* e = GetApiError(s);
  REQUIRE(e != nullptr);
  CHECK(e->reason == "Invalid");  // The code's default reason.
  CHECK(e->message.empty());
  CHECK(e->name.empty());
  CHECK(e->causes.empty());
  const Status causes =
      ErrorFromResponse(Response(422, R"({"kind":"Status","reason":"Invalid","details":{"causes":[
          7, {"field":3,"message":"must be positive","reason":"FieldValueInvalid"}]}})"),
                        "GET /x");
  REQUIRE(GetApiError(causes)->causes.size() == 1);
  CHECK(GetApiError(causes)->causes[0].message == "must be positive");
  CHECK(GetApiError(causes)->causes[0].field.empty());
  CHECK(ErrorFromResponse(Response(500, R"({"kind":5})"), "GET /x").code() ==
        StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kiln::kube
