// Runs the real kiln-worker binary and checks its command-line contract.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/subprocess.h"
#include "base/version.h"
#include "kernels/device.h"

namespace kiln {
namespace {

ProcessResult Run(std::vector<std::string> args) {
  args.insert(args.begin(), KILN_WORKER_BIN);
  auto r = RunProcess({.argv = args});
  REQUIRE(r.ok());
  return *r;
}

TEST_CASE("kiln-worker --version names the build and its GPU libraries", "[worker][cli][process]") {
  auto r = Run({"--version"});
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.rfind(std::string("kiln-worker ") + Version(), 0) == 0);
  if (gpu::BuiltWithCuda()) {
    CHECK(r.stdout_data.find("cuda-runtime 13.0") != std::string::npos);
    CHECK(r.stdout_data.find("nccl 2.28.") != std::string::npos);
    CHECK(r.stdout_data.find("cublas 13.") != std::string::npos);
  } else {
    CHECK(r.stdout_data.find("cpu-only") != std::string::npos);
  }
}

TEST_CASE("kiln-worker --help lists commands and exit codes", "[worker][cli][process]") {
  auto r = Run({"--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.find("Usage: kiln-worker") != std::string::npos);
  CHECK(r.stdout_data.find("devices") != std::string::npos);
  CHECK(r.stdout_data.find("Exit codes") != std::string::npos);
}

TEST_CASE("kiln-worker rejects a missing or unknown command", "[worker][cli][process]") {
  auto none = Run({});
  CHECK(none.exit_code == 2);
  CHECK(none.stderr_data.find("Usage:") != std::string::npos);
  auto bad = Run({"frobnicate"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.stderr_data.find("unknown command 'frobnicate'") != std::string::npos);
  auto extra = Run({"devices", "--what"});
  CHECK(extra.exit_code == 2);
  CHECK(extra.stderr_data.find("'--what'") != std::string::npos);
}

TEST_CASE("kiln-worker devices reports GPUs as JSON", "[worker][cli][process]") {
  auto r = Run({"devices"});
  auto doc = nlohmann::json::parse(r.stdout_data);
  CHECK(doc.at("builtWithCuda").get<bool>() == gpu::BuiltWithCuda());
  if (!gpu::BuiltWithCuda()) {
    CHECK(r.exit_code == 0);
    CHECK(doc.at("devices").empty());
    CHECK(doc.at("error").get<std::string>().find("no CUDA support") != std::string::npos);
    return;
  }
  auto listed = gpu::ListDevices();
  REQUIRE(listed.ok());
  CHECK(doc.at("devices").size() == listed->size());
  for (const auto& d : doc.at("devices")) CHECK(d.at("probe") == "OK");
  CHECK(r.exit_code == 0);
}

}  // namespace
}  // namespace kiln
