// DistEnv: the torchrun-style variables, with Kubernetes' Indexed Job index
// as the rank fallback, and errors that name the variable.
#include "worker/dist/dist_env.h"

#include <map>
#include <string>

#include <catch2/catch.hpp>

namespace kiln::dist {
namespace {

StatusOr<DistEnv> FromMap(const std::map<std::string, std::string>& vars) {
  return DistEnvFromEnvironment([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST_CASE("DistEnv without WORLD_SIZE is a single process", "[dist]") {
  auto env = FromMap({});
  REQUIRE(env.ok());
  CHECK(env->world_size == 1);
  CHECK(env->rank == 0);
}

TEST_CASE("DistEnv reads rank, world size and the master address", "[dist]") {
  auto env = FromMap(
      {{"WORLD_SIZE", "4"}, {"RANK", "3"}, {"MASTER_ADDR", "job-0.job"}, {"MASTER_PORT", "29500"}});
  REQUIRE(env.ok());
  CHECK(env->world_size == 4);
  CHECK(env->rank == 3);
  CHECK(env->master_addr == "job-0.job");
  CHECK(env->master_port == 29500);
}

TEST_CASE("DistEnv falls back to JOB_COMPLETION_INDEX for the rank", "[dist]") {
  auto env = FromMap({{"WORLD_SIZE", "2"},
                      {"JOB_COMPLETION_INDEX", "1"},
                      {"MASTER_ADDR", "h"},
                      {"MASTER_PORT", "1"}});
  REQUIRE(env.ok());
  CHECK(env->rank == 1);
}

TEST_CASE("DistEnv names the variable that is wrong", "[dist]") {
  auto expect = [](const std::map<std::string, std::string>& vars, const std::string& name) {
    auto env = FromMap(vars);
    INFO(name);
    REQUIRE_FALSE(env.ok());
    CHECK(env.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(env.status().message(), Catch::Contains(name));
  };
  expect({{"WORLD_SIZE", "two"}}, "WORLD_SIZE");
  expect({{"WORLD_SIZE", "0"}}, "WORLD_SIZE");
  expect({{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}, "RANK");
  expect({{"WORLD_SIZE", "2"}, {"RANK", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}, "RANK");
  expect({{"WORLD_SIZE", "2"}, {"RANK", "-1"}}, "RANK");
  expect({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_PORT", "1"}}, "MASTER_ADDR");
  expect({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "h"}}, "MASTER_PORT");
  expect({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}},
         "MASTER_PORT");
}

}  // namespace
}  // namespace kiln::dist
