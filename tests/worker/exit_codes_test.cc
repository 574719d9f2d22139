#include "worker/exit_codes.h"

#include <catch2/catch.hpp>

namespace kiln::worker {
namespace {

constexpr StatusCode kAllCodes[] = {
    StatusCode::kCancelled,         StatusCode::kInvalidArgument,    StatusCode::kDeadlineExceeded,
    StatusCode::kNotFound,          StatusCode::kAlreadyExists,      StatusCode::kPermissionDenied,
    StatusCode::kResourceExhausted, StatusCode::kFailedPrecondition, StatusCode::kAborted,
    StatusCode::kUnavailable,       StatusCode::kDataLoss,           StatusCode::kUnauthenticated,
    StatusCode::kInternal,
};

TEST_CASE("exit codes follow the one retry policy", "[worker][exit_codes]") {
  CHECK(ExitCodeFor(Status::Ok()) == ExitCode::kSuccess);
  for (StatusCode code : kAllCodes) {
    const Status s(code, "x");
    INFO(StatusCodeName(code));
    // A status that may go away by itself never ends the work for good.
    if (s.IsRetryable()) {
      CHECK(ExitCodeFor(s) == ExitCode::kInfrastructureFault);
      CHECK(ExitCodeIsRetryable(ExitCodeFor(s)));
    }
  }
  CHECK(ExitCodeFor(Status::InvalidArgument("x")) == ExitCode::kConfigurationError);
  CHECK(ExitCodeFor(Status::NotFound("x")) == ExitCode::kDataError);
  CHECK(ExitCodeFor(Status::DataLoss("x")) == ExitCode::kDataError);
  CHECK(ExitCodeFor(Status::DeadlineExceeded("x")) == ExitCode::kInfrastructureFault);
  CHECK(ExitCodeFor(Status::Internal("x")) == ExitCode::kInternalError);
}

TEST_CASE("which exit codes the operator retries", "[worker][exit_codes]") {
  CHECK_FALSE(ExitCodeIsRetryable(ExitCode::kSuccess));
  CHECK(ExitCodeIsRetryable(ExitCode::kInternalError));
  CHECK_FALSE(ExitCodeIsRetryable(ExitCode::kConfigurationError));
  CHECK(ExitCodeIsRetryable(ExitCode::kInfrastructureFault));
  CHECK(ExitCodeIsRetryable(ExitCode::kCommunicationTimeout));
  CHECK(ExitCodeIsRetryable(ExitCode::kNumericsFault));
  CHECK_FALSE(ExitCodeIsRetryable(ExitCode::kDataError));
  CHECK_FALSE(ExitCodeIsRetryable(ExitCode::kQualityGateFailed));
  CHECK_FALSE(ExitCodeIsRetryable(ExitCode::kSuperseded));
  CHECK(std::string(ExitCodeName(ExitCode::kSuperseded)) == "Superseded");
}

}  // namespace
}  // namespace kiln::worker
