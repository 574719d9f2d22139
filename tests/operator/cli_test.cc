// Runs the real kiln-operator binary and checks its command-line contract.
#include <catch2/catch.hpp>

#include "base/subprocess.h"
#include "base/version.h"

namespace kiln {
namespace {

ProcessResult Run(std::vector<std::string> args) {
  args.insert(args.begin(), KILN_OPERATOR_BIN);
  auto r = RunProcess({.argv = args});
  REQUIRE(r.ok());
  return *r;
}

TEST_CASE("kiln-operator --version prints the build version", "[operator][cli]") {
  auto r = Run({"--version"});
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.rfind(std::string("kiln-operator ") + Version() + " (commit ", 0) == 0);
}

TEST_CASE("kiln-operator --help documents the options", "[operator][cli]") {
  auto r = Run({"--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.find("Usage: kiln-operator") != std::string::npos);
  CHECK(r.stdout_data.find("--version") != std::string::npos);
}

TEST_CASE("kiln-operator rejects unknown arguments with usage", "[operator][cli]") {
  auto r = Run({"--bogus"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("unknown flag '--bogus'") != std::string::npos);
  CHECK(r.stderr_data.find("kiln-operator --help") != std::string::npos);
  r = Run({"stray"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("unexpected argument 'stray'") != std::string::npos);
}

TEST_CASE("kiln-operator names the flag whose value is bad", "[operator][cli]") {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"--log-level", "loud"}, "--log-level: log level \"loud\""},
      {{"--log-format=xml"}, "--log-format: log format \"xml\""},
      {{"--metrics-bind-address", "8080"}, "bind address \"8080\": want host:port"},
      {{"--health-probe-bind-address=:99999"}, "port must be 1-65535"},
      {{"--graceful-shutdown-timeout", "ten"}, "--graceful-shutdown-timeout: duration \"ten\""},
      {{"--kubeconfig"}, "flag '--kubeconfig' needs a value"},
      {{"--kube-api-qps", "fast"}, "take numbers"},
  };
  for (const auto& c : cases) {
    INFO(c.message);
    auto r = Run(c.args);
    CHECK(r.exit_code == 2);
    CHECK(r.stderr_data.find(c.message) != std::string::npos);
  }
}

TEST_CASE("kiln-operator refuses leader-election timings that cannot work", "[operator][cli]") {
  auto r = Run({"--kubeconfig", "/dev/null", "--leader-elect", "--lease-duration", "5s",
                "--renew-deadline", "10s"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("renew") != std::string::npos);
}

TEST_CASE("kiln-operator reports a missing kubeconfig as JSON and exits 2", "[operator][cli]") {
  auto r = Run({"--kubeconfig", "/nonexistent/kubeconfig"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("\"level\":\"error\"") != std::string::npos);
  CHECK(r.stderr_data.find("/nonexistent/kubeconfig") != std::string::npos);
}

}  // namespace
}  // namespace kiln
