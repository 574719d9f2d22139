// FlagSet: the "--name value" / "--name=value" flags of kiln-worker's
// commands. Each flag writes one variable; numbers and durations are checked
// as they are parsed, and every error names the flag.
#ifndef KILN_WORKER_CMD_FLAGS_H_
#define KILN_WORKER_CMD_FLAGS_H_

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>

namespace kiln::worker {

class FlagSet {
 public:
  void String(const std::string& name, std::string* out);
  // A switch: "--name" alone sets it; "--name=true" / "--name=false" too.
  void Bool(const std::string& name, bool* out);
  // An integer in [lo, hi].
  void Int(const std::string& name, int* out, int lo, int hi);
  // A Go-style duration ("30s", "2m"), at least `min`.
  void Duration(const std::string& name, std::chrono::milliseconds* out,
                std::chrono::milliseconds min = std::chrono::milliseconds(0));

  // Parses argv[first..argc). Returns "" on success, "help" for -h/--help,
  // otherwise the error to print.
  std::string Parse(int argc, char** argv, int first);

 private:
  std::map<std::string, std::function<std::string(const std::string&)>> setters_;
  std::set<std::string> switches_;  // Bool flags: no separate value.
};

}  // namespace kiln::worker

#endif  // KILN_WORKER_CMD_FLAGS_H_
