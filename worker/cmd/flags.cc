#include "worker/cmd/flags.h"

#include <charconv>

#include "base/duration.h"

namespace kiln::worker {

void FlagSet::String(const std::string& name, std::string* out) {
  setters_[name] = [out](const std::string& v) {
    *out = v;
    return std::string();
  };
}

void FlagSet::Int(const std::string& name, int* out, int lo, int hi) {
  setters_[name] = [=](const std::string& v) {
    int value = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (v.empty() || ec != std::errc() || end != v.data() + v.size()) {
      return "--" + name + ": '" + v + "' is not an integer";
    }
    if (value < lo || value > hi) {
      return "--" + name + ": " + v + " is outside [" + std::to_string(lo) + ", " +
             std::to_string(hi) + "]";
    }
    *out = value;
    return std::string();
  };
}

void FlagSet::Duration(const std::string& name, std::chrono::milliseconds* out,
                       std::chrono::milliseconds min) {
  setters_[name] = [=](const std::string& v) {
    auto d = ParseDuration(v);
    if (!d.ok()) return "--" + name + ": " + d.status().message();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
    if (ms < min) return "--" + name + ": must be at least " + FormatDuration(min);
    *out = ms;
    return std::string();
  };
}

void FlagSet::Bool(const std::string& name, bool* out) {
  switches_.insert(name);
  setters_[name] = [name, out](const std::string& v) {
    if (v != "true" && v != "false") return "--" + name + ": 'true' or 'false', not '" + v + "'";
    *out = v == "true";
    return std::string();
  };
}

std::string FlagSet::Parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return "help";
    if (arg.rfind("--", 0) != 0) return "unexpected argument '" + arg + "'";
    std::string name = arg.substr(2), value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (switches_.count(name) != 0) {
      value = "true";
    } else {
      if (i + 1 >= argc) return "flag '--" + name + "' needs a value";
      value = argv[++i];
    }
    auto it = setters_.find(name);
    if (it == setters_.end()) return "unknown flag '--" + name + "'";
    if (std::string error = it->second(value); !error.empty()) return error;
  }
  return "";
}

}  // namespace kiln::worker
