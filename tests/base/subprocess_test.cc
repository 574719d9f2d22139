#include "base/subprocess.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "base/file.h"

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

namespace kiln {
namespace {

std::string TempFile(const char* name) {
  return (std::filesystem::temp_directory_path() /
          (std::string("kiln-subprocess-") + std::to_string(getpid()) + "-" + name))
      .string();
}

TEST_CASE("a started process writes both streams to its file and exits", "[base][subprocess]") {
  const std::string out = TempFile("both");
  auto p = Subprocess::Start({.argv = {"sh", "-c", "echo out; echo err >&2; echo $KILN_X; exit 3"},
                              .env = {{"KILN_X", "x1"}}},
                             out);
  REQUIRE(p.ok());
  CHECK((*p)->pid() > 0);
  CHECK((*p)->Wait() == 3);
  CHECK((*p)->Poll() == 3);  // Reaped: the same code at once.
  CHECK(ReadFile(out).value_or("") == "out\nerr\nx1\n");
  std::filesystem::remove(out);
}

TEST_CASE("a started process can be polled, signalled and is killed when dropped",
          "[base][subprocess]") {
  const std::string out = TempFile("signal");
  auto p = Subprocess::Start({.argv = {"sleep", "30"}}, out);
  REQUIRE(p.ok());
  CHECK(!(*p)->Poll().has_value());
  (*p)->Signal(SIGTERM);
  CHECK((*p)->Wait() == 128 + SIGTERM);

  auto q = Subprocess::Start({.argv = {"sleep", "30"}}, out);
  REQUIRE(q.ok());
  const pid_t pid = (*q)->pid();
  q->reset();  // SIGKILL and reap: the pid is gone.
  CHECK(kill(pid, 0) == -1);
  std::filesystem::remove(out);

  CHECK(Subprocess::Start({.argv = {"/nonexistent/kiln"}}, out).status().code() ==
        StatusCode::kNotFound);
  CHECK(Subprocess::Start({}, out).status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln
