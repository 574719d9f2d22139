// DistEnv: where this process sits in a data-parallel job, read from the
// environment the operator sets on every worker pod — the same variables as
// PyTorch's torchrun, so people and tools already know them:
//   WORLD_SIZE   number of ranks (unset or 1: a single process)
//   RANK         this process's rank in [0, WORLD_SIZE); when unset, Kubernetes'
//                JOB_COMPLETION_INDEX (Indexed Jobs) is used
//   MASTER_ADDR  host name or address of rank 0 (e.g. a headless Service name)
//   MASTER_PORT  port rank 0 listens on for the rendezvous
#ifndef KILN_WORKER_DIST_DIST_ENV_H_
#define KILN_WORKER_DIST_DIST_ENV_H_

#include <functional>
#include <string>

#include "base/statusor.h"

namespace kiln::dist {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  std::string master_addr;
  int master_port = 0;
};

using GetEnv = std::function<const char*(const char*)>;

// Reads the variables above through `getenv`. InvalidArgument naming the
// variable when one is malformed, out of range, or missing while WORLD_SIZE
// is above 1.
StatusOr<DistEnv> DistEnvFromEnvironment(const GetEnv& getenv);
StatusOr<DistEnv> DistEnvFromEnvironment();

}  // namespace kiln::dist

#endif  // KILN_WORKER_DIST_DIST_ENV_H_
