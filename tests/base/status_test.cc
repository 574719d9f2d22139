#include "base/status.h"

#include <sstream>

#include <catch2/catch.hpp>

#include "base/statusor.h"

namespace kiln {
namespace {

TEST_CASE("default Status is ok and prints OK", "[base][status]") {
  Status s;
  CHECK(s.ok());
  CHECK(s.code() == StatusCode::kOk);
  CHECK(s.ToString() == "OK");
  CHECK(Status(StatusCode::kOk, "ignored").message().empty());
}

TEST_CASE("factories set code and message", "[base][status]") {
  Status s = Status::NotFound("pod default/a");
  CHECK_FALSE(s.ok());
  CHECK(s.code() == StatusCode::kNotFound);
  CHECK(s.message() == "pod default/a");
  CHECK(s.ToString() == "NotFound: pod default/a");
  std::ostringstream os;
  os << Status::Internal("boom");
  CHECK(os.str() == "Internal: boom");
}

TEST_CASE("only transient codes are retryable", "[base][status]") {
  CHECK(Status::Unavailable("x").IsRetryable());
  CHECK(Status::DeadlineExceeded("x").IsRetryable());
  CHECK(Status::ResourceExhausted("x").IsRetryable());
  CHECK(Status::Aborted("x").IsRetryable());
  CHECK_FALSE(Status::InvalidArgument("x").IsRetryable());
  CHECK_FALSE(Status::NotFound("x").IsRetryable());
  CHECK_FALSE(Status::DataLoss("x").IsRetryable());
  CHECK_FALSE(Status::Ok().IsRetryable());
  CHECK_FALSE(Status::Internal("x").IsRetryable());
  CHECK_FALSE(Status::PermissionDenied("x").IsRetryable());
  CHECK_FALSE(Status::FailedPrecondition("x").IsRetryable());
  CHECK_FALSE(Status::Cancelled("x").IsRetryable());
}

TEST_CASE("WithContext prefixes errors and leaves ok alone", "[base][status]") {
  CHECK(Status::Unavailable("connection refused").WithContext("GET /api").ToString() ==
        "Unavailable: GET /api: connection refused");
  CHECK(Status::Ok().WithContext("anything").ok());
}

struct RetryHint : StatusDetail {
  explicit RetryHint(int s) : seconds(s) {}
  int seconds;
};
struct OtherDetail : StatusDetail {};

TEST_CASE("details ride along with errors and survive WithContext", "[base][status]") {
  Status s = Status::ResourceExhausted("slow down").WithDetail(std::make_shared<RetryHint>(3));
  REQUIRE(s.detail<RetryHint>() != nullptr);
  CHECK(s.detail<RetryHint>()->seconds == 3);
  CHECK(s.detail<OtherDetail>() == nullptr);
  Status wrapped = s.WithContext("list pods");
  REQUIRE(wrapped.detail<RetryHint>() != nullptr);
  CHECK(wrapped.detail<RetryHint>()->seconds == 3);
  CHECK(wrapped == Status::ResourceExhausted("list pods: slow down"));
  CHECK(Status::Ok().WithDetail(std::make_shared<RetryHint>(1)).detail<RetryHint>() == nullptr);
}

StatusOr<int> ParsePositive(int v) {
  if (v <= 0) return Status::InvalidArgument("not positive: " + std::to_string(v));
  return v;
}

Status Doubled(int v, int& out) {
  KILN_ASSIGN_OR_RETURN(int parsed, ParsePositive(v));
  out = parsed * 2;
  return Status::Ok();
}

Status Chain(int v) {
  KILN_RETURN_IF_ERROR(ParsePositive(v).status());
  return Status::Ok();
}

TEST_CASE("StatusOr holds a value or an error", "[base][statusor]") {
  auto good = ParsePositive(3);
  REQUIRE(good.ok());
  CHECK(*good == 3);
  CHECK(good.value_or(7) == 3);
  auto bad = ParsePositive(-1);
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.value_or(7) == 7);
}

TEST_CASE("macros propagate errors and unwrap values", "[base][statusor]") {
  int out = 0;
  CHECK(Doubled(4, out).ok());
  CHECK(out == 8);
  Status s = Doubled(0, out);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message() == "not positive: 0");
  CHECK(out == 8);
  CHECK(Chain(1).ok());
  CHECK(Chain(-5).code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln
