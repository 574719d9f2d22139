// Worker: runs the kiln-worker this build made (KILN_WORKER_BIN) with `args`
// to completion (5 minutes at most) and returns its exit code and output.
// For Catch tests of the worker's commands.
#ifndef KILN_TESTS_SUPPORT_WORKER_PROCESS_H_
#define KILN_TESTS_SUPPORT_WORKER_PROCESS_H_

#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "base/subprocess.h"

namespace kiln::testing {

inline ProcessResult Worker(std::vector<std::string> args) {
  args.insert(args.begin(), KILN_WORKER_BIN);
  auto r = RunProcess({.argv = args, .timeout = std::chrono::minutes(5)});
  REQUIRE(r.ok());
  return *r;
}

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_WORKER_PROCESS_H_
