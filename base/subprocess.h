// RunProcess: runs a program to completion with captured output and a deadline.
// Used for tools kiln drives from outside (kubectl in tests, exec credential
// plugins). Thread-safe: each call owns its child and pipes.
#ifndef KILN_BASE_SUBPROCESS_H_
#define KILN_BASE_SUBPROCESS_H_

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "base/statusor.h"

namespace kiln {

struct ProcessOptions {
  // argv[0] is looked up on PATH when it holds no '/'.
  std::vector<std::string> argv;
  // Variables set (or overridden) on top of this process's environment.
  std::map<std::string, std::string> env;
  // Written to the child's stdin, which is then closed.
  std::string stdin_data;
  // The child (and its process group) is killed when this passes.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
};

struct ProcessResult {
  int exit_code = -1;  // Exit status, or 128+signal when killed by a signal.
  std::string stdout_data;
  std::string stderr_data;
};

// Runs `options.argv` and waits for it. A non-zero exit is not an error here:
// it is reported in ProcessResult. Errors: InvalidArgument for an empty argv,
// NotFound when the program does not exist, DeadlineExceeded on timeout; the
// OS calls' own failures (and a program that may not be run) as
// base/errno_status.h maps their errno.
StatusOr<ProcessResult> RunProcess(const ProcessOptions& options);

}  // namespace kiln

#endif  // KILN_BASE_SUBPROCESS_H_
