// RunProcess: runs a program to completion with captured output and a deadline.
// Used for tools kiln drives from outside (kubectl in tests, exec credential
// plugins). Thread-safe: each call owns its child and pipes.
// Subprocess: a program started to run beside the caller (a server or worker
// in a test), its output going to a file; killed when the handle goes. Not
// thread-safe.
#ifndef KILN_BASE_SUBPROCESS_H_
#define KILN_BASE_SUBPROCESS_H_

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

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

class Subprocess {
 public:
  // Starts `options.argv` with `options.env` added to this process's
  // environment, stdin from /dev/null, and stdout and stderr both appended to
  // `output_file` (created or truncated first). `stdin_data` and `timeout`
  // do not apply. Errors as RunProcess's; the child is spawned (posix_spawn),
  // never forked, so nothing runs in a copy of this process's threads.
  static StatusOr<std::unique_ptr<Subprocess>> Start(const ProcessOptions& options,
                                                     const std::string& output_file);
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  // Kills the process (SIGKILL) if it still runs, and reaps it.
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // Sends `signal` unless the process has been reaped.
  void Signal(int signal) const;
  // The exit code (128+signal when killed) once it has exited, without waiting.
  std::optional<int> Poll();
  // Waits for the process to exit and returns its exit code.
  int Wait();

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_;  // -1 once reaped.
  int exit_code_ = -1;
};

}  // namespace kiln

#endif  // KILN_BASE_SUBPROCESS_H_
