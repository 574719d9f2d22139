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
  CHECK(r.stderr_data.find("unknown argument '--bogus'") != std::string::npos);
  CHECK(r.stderr_data.find("Usage:") != std::string::npos);
}

}  // namespace
}  // namespace kiln
