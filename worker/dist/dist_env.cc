#include "worker/dist/dist_env.h"

#include <charconv>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace kiln::dist {
namespace {

// The variable as an integer in [lo, hi]; nullopt when unset or empty.
StatusOr<std::optional<int>> IntVar(const GetEnv& getenv, const char* name, int lo, int hi) {
  const char* raw = getenv(name);
  if (raw == nullptr || *raw == '\0') return std::optional<int>();
  std::string_view text(raw);
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return Status::InvalidArgument(std::string(name) + "='" + std::string(text) +
                                   "' is not an integer");
  }
  if (value < lo || value > hi) {
    return Status::InvalidArgument(std::string(name) + "=" + std::to_string(value) +
                                   " is outside [" + std::to_string(lo) + ", " +
                                   std::to_string(hi) + "]");
  }
  return std::optional<int>(value);
}

}  // namespace

StatusOr<DistEnv> DistEnvFromEnvironment(const GetEnv& getenv) {
  DistEnv env;
  KILN_ASSIGN_OR_RETURN(auto world, IntVar(getenv, "WORLD_SIZE", 1, 1 << 20));
  env.world_size = world.value_or(1);
  KILN_ASSIGN_OR_RETURN(auto rank, IntVar(getenv, "RANK", 0, env.world_size - 1));
  if (!rank) {
    KILN_ASSIGN_OR_RETURN(rank, IntVar(getenv, "JOB_COMPLETION_INDEX", 0, env.world_size - 1));
  }
  env.rank = rank.value_or(0);
  if (env.world_size == 1) return env;
  if (!rank) {
    return Status::InvalidArgument("WORLD_SIZE=" + std::to_string(env.world_size) +
                                   " but neither RANK nor JOB_COMPLETION_INDEX is set");
  }
  const char* addr = getenv("MASTER_ADDR");
  if (addr == nullptr || *addr == '\0') {
    return Status::InvalidArgument("WORLD_SIZE=" + std::to_string(env.world_size) +
                                   " but MASTER_ADDR (rank 0's host) is not set");
  }
  env.master_addr = addr;
  KILN_ASSIGN_OR_RETURN(auto port, IntVar(getenv, "MASTER_PORT", 1, 65535));
  if (!port) {
    return Status::InvalidArgument("WORLD_SIZE=" + std::to_string(env.world_size) +
                                   " but MASTER_PORT (rank 0's rendezvous port) is not set");
  }
  env.master_port = *port;
  return env;
}

StatusOr<DistEnv> DistEnvFromEnvironment() {
  return DistEnvFromEnvironment([](const char* name) { return std::getenv(name); });
}

}  // namespace kiln::dist
