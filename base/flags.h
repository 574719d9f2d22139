// FlagSet: the one command-line parser of every kiln binary. A command defines
// its flags, each bound to a variable whose value at definition time is the
// default; Parse reads "--name value" and "--name=value", checks each value's
// type and range, and every error names the flag and says what was expected
// (`--layers: "2.5" is not an integer`). The --help text is generated from
// the definitions. Not thread-safe; define and parse on one thread.
#ifndef KILN_BASE_FLAGS_H_
#define KILN_BASE_FLAGS_H_

#include <charconv>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

namespace kiln {

// The exit status of every kiln binary for bad usage (kiln-worker's
// ConfigurationError, worker/exit_codes.h).
inline constexpr int kUsageExitCode = 2;

class FlagSet {
 public:
  // One defined flag; the setters refine its --help line.
  class Flag {
   public:
    // The word after the flag name in --help (default: from the type, e.g. N).
    Flag& Metavar(std::string metavar);
    // The default as --help states it, for defaults computed at run time.
    Flag& DefaultText(std::string text);
    // An extra check of the raw text, after the type's; its error message
    // follows "--name: ".
    Flag& Check(std::function<Status(const std::string&)> check);
    // A one-letter alias: "-n value", "-n=value", a switch as "-A".
    Flag& Short(char letter);

   private:
    friend class FlagSet;
    std::string name_, metavar_, help_, default_text_, range_text_;
    char short_ = 0;
    bool is_switch_ = false;  // Bool: no separate value.
    bool repeated_ = false;
    bool set_ = false;
    std::function<std::string(const std::string&)> set_value_;  // Returns an error.
    std::function<Status(const std::string&)> check_;
  };

  // `program` names the command in messages ("kiln-worker train");
  // `synopsis` is the help's first lines ("Usage: ...", a description);
  // `epilogue` follows the options (exit codes, notes).
  FlagSet(std::string program, std::string synopsis, std::string epilogue = "");
  FlagSet(const FlagSet&) = delete;
  FlagSet& operator=(const FlagSet&) = delete;

  // A heading in --help above the flags defined after it ("Model:").
  void Section(std::string title);

  Flag& String(const std::string& name, std::string* out, std::string help);
  // Repeatable: each occurrence appends a value.
  Flag& Strings(const std::string& name, std::vector<std::string>* out, std::string help);
  // A switch: "--name" alone sets it, "--name=true" / "--name=false" too.
  Flag& Bool(const std::string& name, bool* out, std::string help);
  // A whole number in [lo, hi] ("2.5", "12x" and out-of-range values refused).
  template <std::integral T>
  Flag& Int(const std::string& name, T* out, T lo, T hi, std::string help);
  // A finite number in [lo, hi].
  Flag& Double(const std::string& name, double* out, double lo, double hi, std::string help);
  // A Go-style duration ("30s", "1m30s"), at least `min`.
  Flag& Duration(const std::string& name, std::chrono::milliseconds* out,
                 std::chrono::milliseconds min, std::string help);
  // One of `words`.
  Flag& Enum(const std::string& name, std::string* out, std::vector<std::string> words,
             std::string help);

  // Accepts arguments that are not flags, in order, into `out`, wherever they
  // stand among the flags ("status tj x -n ns"); after "--" every argument is
  // one. Without it such an argument is an error.
  void Positionals(std::vector<std::string>* out);

  // Parses argv[first..argc). InvalidArgument naming the flag for an unknown
  // flag, a missing or bad value or a stray argument.
  Status Parse(int argc, char** argv, int first);

  // Parse as a command's entry point uses it: nullopt to go on; otherwise
  // the exit status to return after printing the help to stdout (--help, -h:
  // 0) or the error to stderr (kUsageExitCode).
  std::optional<int> ParseOrExit(int argc, char** argv, int first);

  // Prints "<program>: <why>" and the pointer to --help to stderr; returns
  // kUsageExitCode. For the checks that follow parsing (a missing flag).
  int UsageError(const std::string& why) const;

  // Whether the flag was given on the command line.
  bool IsSet(const std::string& name) const;

  // The generated help.
  std::string Usage() const;

 private:
  template <std::integral T>
  static std::string ParseInt(const std::string& text, T lo, T hi, T* out);
  Flag& Add(const std::string& name, std::string help, std::string metavar,
            std::string default_text, std::function<std::string(const std::string&)> set_value);
  Flag* Find(const std::string& name) const;
  Flag* FindShort(char letter) const;
  // Sets `flag` (spelled `spelling` in errors) from argv[i] and, when it
  // needs a value and has none inline, argv[i + 1] (advancing i).
  Status Set(Flag& flag, const std::string& spelling, bool has_value, std::string value, int argc,
             char** argv, int& i);

  std::string program_, synopsis_, epilogue_;
  // Flags and section titles in definition order; a title has no name.
  std::vector<std::unique_ptr<Flag>> entries_;
  std::vector<std::string>* positionals_ = nullptr;
};

// Defined here because they are templates.
template <std::integral T>
FlagSet::Flag& FlagSet::Int(const std::string& name, T* out, T lo, T hi, std::string help) {
  Flag& f = Add(name, std::move(help), "N", std::to_string(*out),
                [=](const std::string& text) { return ParseInt(text, lo, hi, out); });
  constexpr T kMin = std::numeric_limits<T>::min(), kMax = std::numeric_limits<T>::max();
  if (lo != kMin && hi != kMax) {
    f.range_text_ = std::to_string(lo) + " to " + std::to_string(hi);
  } else if (lo != kMin) {
    f.range_text_ = "at least " + std::to_string(lo);
  } else if (hi != kMax) {
    f.range_text_ = "at most " + std::to_string(hi);
  }
  return f;
}

template <std::integral T>
std::string FlagSet::ParseInt(const std::string& text, T lo, T hi, T* out) {
  T value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ptr != end || ec == std::errc::invalid_argument) {
    return "\"" + text + "\" is not an integer";
  }
  if (ec == std::errc::result_out_of_range || value < lo || value > hi) {
    return "\"" + text + "\" is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  }
  *out = value;
  return "";
}

}  // namespace kiln

#endif  // KILN_BASE_FLAGS_H_
