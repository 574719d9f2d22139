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

TEST_CASE("kiln-operator --version prints the build version", "[operator][cli][process]") {
  auto r = Run({"--version"});
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.rfind(std::string("kiln-operator ") + Version() + " (commit ", 0) == 0);
}

TEST_CASE("kiln-operator --help documents the options", "[operator][cli][process]") {
  auto r = Run({"--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.find("Usage: kiln-operator") != std::string::npos);
  CHECK(r.stdout_data.find("--version") != std::string::npos);
  // Generated from the definitions: type, default and description per flag.
  CHECK(r.stdout_data.find("--kube-api-qps X") != std::string::npos);
  CHECK(r.stdout_data.find("default 15s)") != std::string::npos);
  CHECK(r.stdout_data.find("Exit status: 0 after a requested stop") != std::string::npos);
}

// The bad-flag table: each line exits 2 before any cluster is contacted, and
// the error names the flag and what it expected.
TEST_CASE("kiln-operator refuses bad flags, naming them", "[operator][cli][flags][process]") {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"--bogus"}, "unknown flag '--bogus'"},
      {{"stray"}, "unexpected argument 'stray'"},
      {{"--log-level", "loud"}, "--log-level: log level \"loud\""},
      {{"--log-format=xml"}, "--log-format: log format \"xml\""},
      {{"--metrics-bind-address", "8080"},
       "--metrics-bind-address: bind address \"8080\": want host:port"},
      {{"--health-probe-bind-address=:99999"},
       "--health-probe-bind-address: bind address \":99999\": port must be 1-65535"},
      {{"--graceful-shutdown-timeout", "ten"}, "--graceful-shutdown-timeout: duration \"ten\""},
      {{"--lease-duration", "-1s"}, "--lease-duration: duration \"-1s\""},
      {{"--renew-deadline=0"}, "--renew-deadline: \"0\" is shorter than 1ms"},
      {{"--retry-period", "2"}, "--retry-period: duration \"2\""},
      {{"--kubeconfig"}, "--kubeconfig: needs a value"},
      {{"--kube-api-qps", "fast"}, "--kube-api-qps: \"fast\" is not a number"},
      {{"--kube-api-qps=50x"}, "--kube-api-qps: \"50x\" is not a number"},
      {{"--kube-api-qps=-1"}, "--kube-api-qps: \"-1\" is outside [0, "},
      {{"--kube-api-burst", "2.5"}, "--kube-api-burst: \"2.5\" is not an integer"},
      {{"--kube-api-burst", "0"}, "--kube-api-burst: \"0\" is outside [1, "},
      {{"--leader-elect=yes"}, "--leader-elect: \"yes\" is not true or false"},
      {{"--version=1"}, "--version: \"1\" is not true or false"},
  };
  for (const auto& c : cases) {
    INFO(c.message);
    auto r = Run(c.args);
    CHECK(r.exit_code == 2);
    CHECK(r.stderr_data.rfind("kiln-operator: " + c.message, 0) == 0);
    CHECK(r.stderr_data.find("Run 'kiln-operator --help' for usage.") != std::string::npos);
  }
}

TEST_CASE("kiln-operator refuses leader-election timings that cannot work",
          "[operator][cli][process]") {
  auto r = Run({"--kubeconfig", "/dev/null", "--leader-elect", "--lease-duration", "5s",
                "--renew-deadline", "10s"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("renew") != std::string::npos);
}

TEST_CASE("kiln-operator reports a missing kubeconfig as JSON and exits 2",
          "[operator][cli][process]") {
  auto r = Run({"--kubeconfig", "/nonexistent/kubeconfig"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("\"level\":\"error\"") != std::string::npos);
  CHECK(r.stderr_data.find("/nonexistent/kubeconfig") != std::string::npos);
}

}  // namespace
}  // namespace kiln
