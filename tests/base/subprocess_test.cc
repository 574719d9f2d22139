#include "base/subprocess.h"

#include <catch2/catch.hpp>

namespace kiln {
namespace {

using std::chrono::milliseconds;

TEST_CASE("captures stdout, stderr and exit code", "[base][subprocess]") {
  auto r = RunProcess({.argv = {"sh", "-c", "echo out; echo err >&2; exit 7"}});
  REQUIRE(r.ok());
  CHECK(r->exit_code == 7);
  CHECK(r->stdout_data == "out\n");
  CHECK(r->stderr_data == "err\n");
}

TEST_CASE("passes stdin and extra environment", "[base][subprocess]") {
  auto r = RunProcess({.argv = {"sh", "-c", "cat; printf %s \"$KILN_TEST_VAR\""},
                       .env = {{"KILN_TEST_VAR", "v1"}},
                       .stdin_data = "hello\n"});
  REQUIRE(r.ok());
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data == "hello\nv1");
}

TEST_CASE("stdin for a child that never reads it does not kill the caller", "[base][subprocess]") {
  // Regression: the write got SIGPIPE once the child exited, killing the test process.
  auto r = RunProcess({.argv = {"true"}, .stdin_data = std::string(4 << 20, 'x')});
  REQUIRE(r.ok());
  CHECK(r->exit_code == 0);
}

TEST_CASE("large output does not deadlock", "[base][subprocess]") {
  auto r =
      RunProcess({.argv = {"sh", "-c", "head -c 1000000 /dev/zero; head -c 300000 /dev/zero >&2"}});
  REQUIRE(r.ok());
  CHECK(r->stdout_data.size() == 1000000);
  CHECK(r->stderr_data.size() == 300000);
}

TEST_CASE("a timeout kills the process group", "[base][subprocess]") {
  auto r = RunProcess({.argv = {"sh", "-c", "sleep 30 & sleep 30"}, .timeout = milliseconds(200)});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kDeadlineExceeded);
}

TEST_CASE("a missing program is NotFound and an empty argv is invalid", "[base][subprocess]") {
  auto missing = RunProcess({.argv = {"kiln-no-such-program-xyz"}});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find("kiln-no-such-program-xyz") != std::string::npos);
  CHECK(RunProcess({}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("death by signal is reported as 128+signal", "[base][subprocess]") {
  auto r = RunProcess({.argv = {"sh", "-c", "kill -9 $$"}});
  REQUIRE(r.ok());
  CHECK(r->exit_code == 128 + 9);
}

}  // namespace
}  // namespace kiln
