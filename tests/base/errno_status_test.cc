#include "base/errno_status.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>

#include <catch2/catch.hpp>

namespace kiln {
namespace {

TEST_CASE("ErrnoStatus maps each errno to one code", "[base][errno]") {
  struct Row {
    int err;
    StatusCode code;
  };
  const Row rows[] = {
      {ENOENT, StatusCode::kNotFound},
      {ENOTDIR, StatusCode::kNotFound},
      {EACCES, StatusCode::kPermissionDenied},
      {EPERM, StatusCode::kPermissionDenied},
      {EROFS, StatusCode::kPermissionDenied},
      {ENOSPC, StatusCode::kResourceExhausted},
      {EDQUOT, StatusCode::kResourceExhausted},
      {EMFILE, StatusCode::kResourceExhausted},
      {ENOMEM, StatusCode::kResourceExhausted},
      {EIO, StatusCode::kUnavailable},
      {EAGAIN, StatusCode::kUnavailable},
      {EINTR, StatusCode::kUnavailable},
      {ETIMEDOUT, StatusCode::kUnavailable},
      {ECONNREFUSED, StatusCode::kUnavailable},
      {EPIPE, StatusCode::kUnavailable},
      {EEXIST, StatusCode::kAlreadyExists},
      {ENOTEMPTY, StatusCode::kAlreadyExists},
      {EINVAL, StatusCode::kInvalidArgument},
      {ENAMETOOLONG, StatusCode::kInvalidArgument},
      {EISDIR, StatusCode::kInvalidArgument},
      {EXDEV, StatusCode::kInternal},
      {ENOEXEC, StatusCode::kInternal},
  };
  for (const auto& r : rows) {
    INFO(std::strerror(r.err));
    CHECK(ErrnoCode(r.err) == r.code);
    CHECK(ErrnoStatus(r.err, "cannot write", "/x").code() == r.code);
  }
}

TEST_CASE("ErrnoStatus names the operation, the path and the reason", "[base][errno]") {
  Status s = ErrnoStatus(ENOSPC, "cannot write", "/ckpt/step_100.ckpt");
  CHECK(s.ToString() ==
        "ResourceExhausted: cannot write /ckpt/step_100.ckpt: No space left on device");
  CHECK(ErrnoStatus(EINTR, "poll", "").message() == "poll: Interrupted system call");
  // A lost errno is kiln's bug.
  CHECK(ErrnoStatus(0, "cannot read", "/x").code() == StatusCode::kInternal);
}

TEST_CASE("ErrnoStatus maps <filesystem> errors the same way", "[base][errno]") {
  std::error_code ec;
  std::filesystem::directory_iterator it("/nonexistent/kiln-errno-test", ec);
  REQUIRE(ec);
  Status s = ErrnoStatus(ec, "cannot list", "/nonexistent/kiln-errno-test");
  CHECK(s.code() == StatusCode::kNotFound);
  CHECK(s.message().rfind("cannot list /nonexistent/kiln-errno-test: ", 0) == 0);
  CHECK(
      ErrnoStatus(std::make_error_code(std::errc::permission_denied), "cannot open", "/y").code() ==
      StatusCode::kPermissionDenied);
  CHECK(ErrnoStatus(std::make_error_code(std::future_errc::no_state), "cannot wait", "").code() ==
        StatusCode::kInternal);
}

TEST_CASE("the mapped codes follow the retry policy", "[base][errno]") {
  for (int err : {EIO, EAGAIN, EINTR, ETIMEDOUT, ENOSPC, EDQUOT}) {
    CHECK(ErrnoStatus(err, "op", "p").IsRetryable());
  }
  for (int err : {ENOENT, EACCES, EPERM, EEXIST, EINVAL, EXDEV}) {
    CHECK_FALSE(ErrnoStatus(err, "op", "p").IsRetryable());
  }
}

}  // namespace
}  // namespace kiln
