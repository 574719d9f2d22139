// BackgroundProcess: a child process running while the test goes on, its
// output captured to a file the test can poll. Killed on destruction. Not
// thread-safe.
#ifndef KILN_TESTS_SUPPORT_BACKGROUND_PROCESS_H_
#define KILN_TESTS_SUPPORT_BACKGROUND_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <sys/wait.h>

#include "base/file.h"

namespace kiln::testing {

class BackgroundProcess {
 public:
  // Starts argv[0] (a path) with stdout and stderr to `output_file`, and
  // `env` ("NAME=value") added to this process's environment.
  BackgroundProcess(std::vector<std::string> argv, std::string output_file,
                    std::vector<std::string> env = {})
      : output_(std::move(output_file)) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(output_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      for (auto& e : env) putenv(e.data());
      execv(args[0], args.data());
      _exit(127);
    }
  }
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;
  ~BackgroundProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      Wait();
    }
  }

  std::string Output() const { return ReadFile(output_).value_or(""); }
  void Signal(int sig) const { kill(pid_, sig); }
  // The exit code once the process has exited (then Wait returns it at once).
  std::optional<int> Poll() {
    if (pid_ <= 0) return exit_code_;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return std::nullopt;
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_;
  }
  // Waits for the process to exit; returns its exit code (128+signal if killed).
  int Wait() {
    int status = 0;
    if (pid_ <= 0) return exit_code_;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_;
  }

 private:
  std::string output_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_BACKGROUND_PROCESS_H_
