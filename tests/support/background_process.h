// BackgroundProcess: a child process running while the test goes on, its
// output captured to a file the test can poll; a thin test-side handle over
// base/subprocess.h's Subprocess. Killed on destruction, and (through
// util-linux's setpriv --pdeathsig, where installed) when the test process
// dies without destructors, e.g. on abort: a kiln-operator outliving its
// test would act on the next tests' objects. Not thread-safe; start it on a
// thread that outlives it (the death signal follows the starting thread).
#ifndef KILN_TESTS_SUPPORT_BACKGROUND_PROCESS_H_
#define KILN_TESTS_SUPPORT_BACKGROUND_PROCESS_H_

#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/file.h"
#include "base/subprocess.h"

namespace kiln::testing {

class BackgroundProcess {
 public:
  // Starts argv[0] with stdout and stderr to `output_file`, and `env`
  // ("NAME=value") added to this process's environment. A program that
  // cannot be started behaves as one that exited 127, with the reason as its
  // output.
  BackgroundProcess(std::vector<std::string> argv, std::string output_file,
                    std::vector<std::string> env = {})
      : output_(std::move(output_file)) {
    if (::access(kSetpriv, X_OK) == 0) {
      argv.insert(argv.begin(), {kSetpriv, "--pdeathsig", "KILL", "--"});
    }
    ProcessOptions options{.argv = std::move(argv)};
    for (const std::string& e : env) {
      const auto eq = e.find('=');
      options.env[e.substr(0, eq)] = eq == std::string::npos ? "" : e.substr(eq + 1);
    }
    auto started = Subprocess::Start(options, output_);
    if (started.ok()) {
      process_ = std::move(*started);
    } else {
      std::ofstream(output_) << started.status().ToString() << "\n";  // The test reads it.
    }
  }
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  std::string Output() const { return ReadFile(output_).value_or(""); }
  void Signal(int sig) const {
    if (process_) process_->Signal(sig);
  }
  // The exit code once the process has exited (then Wait returns it at once).
  std::optional<int> Poll() { return process_ ? process_->Poll() : std::optional<int>(127); }
  // Waits for the process to exit; returns its exit code (128+signal if killed).
  int Wait() { return process_ ? process_->Wait() : 127; }

 private:
  static constexpr const char* kSetpriv = "/usr/bin/setpriv";
  std::string output_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_BACKGROUND_PROCESS_H_
