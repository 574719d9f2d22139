#include "base/flags.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "base/duration.h"

namespace kiln {
namespace {

// "%g" without the noise: 0.0003 as 3e-04 would be, 100000000 in full.
std::string FormatNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.15g", v);
  return buf;
}

std::string Quoted(const std::string& text) { return "\"" + text + "\""; }

std::string JoinWords(const std::vector<std::string>& words, const char* separator) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : separator) + w;
  return out;
}

// Appends `text` to `out` wrapped at 80 columns, every line but the first
// indented by `indent` spaces; `column` is where the first line starts.
void AppendWrapped(std::string& out, const std::string& text, size_t column, size_t indent) {
  constexpr size_t kWidth = 80;
  std::istringstream words(text);
  std::string word;
  bool first = true;
  while (words >> word) {
    if (!first && column + 1 + word.size() > kWidth) {
      out += "\n" + std::string(indent, ' ');
      column = indent;
      first = true;
    }
    if (!first) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
    first = false;
  }
  out += '\n';
}

}  // namespace

FlagSet::Flag& FlagSet::Flag::Metavar(std::string metavar) {
  metavar_ = std::move(metavar);
  return *this;
}

FlagSet::Flag& FlagSet::Flag::DefaultText(std::string text) {
  default_text_ = std::move(text);
  return *this;
}

FlagSet::Flag& FlagSet::Flag::Check(std::function<Status(const std::string&)> check) {
  check_ = std::move(check);
  return *this;
}

FlagSet::Flag& FlagSet::Flag::Short(char letter) {
  short_ = letter;
  return *this;
}

FlagSet::FlagSet(std::string program, std::string synopsis, std::string epilogue)
    : program_(std::move(program)),
      synopsis_(std::move(synopsis)),
      epilogue_(std::move(epilogue)) {}

void FlagSet::Section(std::string title) {
  auto entry = std::make_unique<Flag>();
  entry->help_ = std::move(title);
  entries_.push_back(std::move(entry));
}

FlagSet::Flag& FlagSet::Add(const std::string& name, std::string help, std::string metavar,
                            std::string default_text,
                            std::function<std::string(const std::string&)> set_value) {
  auto flag = std::make_unique<Flag>();
  flag->name_ = name;
  flag->help_ = std::move(help);
  flag->metavar_ = std::move(metavar);
  flag->default_text_ = std::move(default_text);
  flag->set_value_ = std::move(set_value);
  entries_.push_back(std::move(flag));
  return *entries_.back();
}

FlagSet::Flag& FlagSet::String(const std::string& name, std::string* out, std::string help) {
  return Add(name, std::move(help), "STRING", *out, [out](const std::string& text) {
    *out = text;
    return std::string();
  });
}

FlagSet::Flag& FlagSet::Strings(const std::string& name, std::vector<std::string>* out,
                                std::string help) {
  Flag& f = Add(name, std::move(help), "STRING", "", [out](const std::string& text) {
    out->push_back(text);
    return std::string();
  });
  f.repeated_ = true;
  return f;
}

FlagSet::Flag& FlagSet::Bool(const std::string& name, bool* out, std::string help) {
  Flag& f = Add(name, std::move(help), "", *out ? "true" : "", [out](const std::string& text) {
    if (text != "true" && text != "false") return Quoted(text) + " is not true or false";
    *out = text == "true";
    return std::string();
  });
  f.is_switch_ = true;
  return f;
}

FlagSet::Flag& FlagSet::Double(const std::string& name, double* out, double lo, double hi,
                               std::string help) {
  Flag& f = Add(name, std::move(help), "X", FormatNumber(*out), [=](const std::string& text) {
    double value = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ptr != end || ec != std::errc() || !std::isfinite(value)) {
      return Quoted(text) + " is not a number";
    }
    if (value < lo || value > hi) {
      return Quoted(text) + " is outside [" + FormatNumber(lo) + ", " + FormatNumber(hi) + "]";
    }
    *out = value;
    return std::string();
  });
  const bool bounded_below = std::isfinite(lo), bounded_above = std::isfinite(hi);
  if (bounded_below && bounded_above) {
    f.range_text_ = FormatNumber(lo) + " to " + FormatNumber(hi);
  } else if (bounded_below) {
    f.range_text_ = "at least " + FormatNumber(lo);
  } else if (bounded_above) {
    f.range_text_ = "at most " + FormatNumber(hi);
  }
  return f;
}

FlagSet::Flag& FlagSet::Duration(const std::string& name, std::chrono::milliseconds* out,
                                 std::chrono::milliseconds min, std::string help) {
  Flag& f =
      Add(name, std::move(help), "DURATION", FormatDuration(*out), [=](const std::string& text) {
        auto d = ParseDuration(text);
        if (!d.ok()) return d.status().message();
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
        if (ms < min) return Quoted(text) + " is shorter than " + FormatDuration(min);
        *out = ms;
        return std::string();
      });
  if (min > std::chrono::milliseconds(0)) f.range_text_ = "at least " + FormatDuration(min);
  return f;
}

FlagSet::Flag& FlagSet::Enum(const std::string& name, std::string* out,
                             std::vector<std::string> words, std::string help) {
  const std::string metavar = JoinWords(words, "|");
  return Add(name, std::move(help), metavar, *out, [=](const std::string& text) {
    for (const auto& w : words) {
      if (text == w) {
        *out = text;
        return std::string();
      }
    }
    return Quoted(text) + " is not one of " + JoinWords(words, ", ");
  });
}

FlagSet::Flag* FlagSet::Find(const std::string& name) const {
  for (const auto& e : entries_) {
    if (!e->name_.empty() && e->name_ == name) return e.get();
  }
  return nullptr;
}

FlagSet::Flag* FlagSet::FindShort(char letter) const {
  for (const auto& e : entries_) {
    if (!e->name_.empty() && e->short_ == letter) return e.get();
  }
  return nullptr;
}

void FlagSet::Positionals(std::vector<std::string>* out) { positionals_ = out; }

Status FlagSet::Set(Flag& flag, const std::string& spelling, bool has_value, std::string value,
                    int argc, char** argv, int& i) {
  if (!has_value) {
    if (flag.is_switch_) {
      value = "true";
    } else if (i + 1 >= argc) {
      return Status::InvalidArgument(spelling + ": needs a value");
    } else {
      value = argv[++i];
    }
  }
  if (std::string error = flag.set_value_(value); !error.empty()) {
    return Status::InvalidArgument(spelling + ": " + error);
  }
  if (flag.check_) {
    if (Status s = flag.check_(value); !s.ok()) {
      return Status::InvalidArgument(spelling + ": " + s.message());
    }
  }
  flag.set_ = true;
  return Status::Ok();
}

Status FlagSet::Parse(int argc, char** argv, int first) {
  bool flags_ended = false;
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool is_long = arg.rfind("--", 0) == 0 && arg.size() > 2;
    const bool is_short = !is_long && arg.size() >= 2 && arg[0] == '-' && arg[1] != '-';
    if (positionals_ != nullptr && arg == "--" && !flags_ended) {
      flags_ended = true;
      continue;
    }
    if (flags_ended || (!is_long && !is_short)) {
      if (positionals_ == nullptr) {
        return Status::InvalidArgument("unexpected argument '" + arg + "'");
      }
      positionals_->push_back(arg);
      continue;
    }
    std::string name = arg.substr(is_long ? 2 : 1), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (is_short) {
      Flag* flag = name.size() == 1 ? FindShort(name[0]) : nullptr;
      if (flag == nullptr) return Status::InvalidArgument("unknown flag '-" + name + "'");
      KILN_RETURN_IF_ERROR(Set(*flag, "-" + name, has_value, value, argc, argv, i));
      continue;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) return Status::InvalidArgument("unknown flag '--" + name + "'");
    KILN_RETURN_IF_ERROR(Set(*flag, "--" + name, has_value, value, argc, argv, i));
  }
  return Status::Ok();
}

std::optional<int> FlagSet::ParseOrExit(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(Usage().c_str(), stdout);
      return 0;
    }
    if (arg == "--" && positionals_ != nullptr) break;
    // A value that looks like --help ("--model-name --help") is still a value.
    Flag* f = nullptr;
    if (arg.find('=') == std::string::npos) {
      if (arg.rfind("--", 0) == 0) {
        f = Find(arg.substr(2));
      } else if (arg.size() == 2 && arg[0] == '-') {
        f = FindShort(arg[1]);
      }
    }
    if (f != nullptr && !f->is_switch_) ++i;
  }
  if (Status s = Parse(argc, argv, first); !s.ok()) return UsageError(s.message());
  return std::nullopt;
}

int FlagSet::UsageError(const std::string& why) const {
  std::fprintf(stderr, "%s: %s\n\nRun '%s --help' for usage.\n", program_.c_str(), why.c_str(),
               program_.c_str());
  return kUsageExitCode;
}

bool FlagSet::IsSet(const std::string& name) const {
  const Flag* f = Find(name);
  return f != nullptr && f->set_;
}

std::string FlagSet::Usage() const {
  constexpr size_t kHelpColumn = 28;
  std::string out = synopsis_;
  if (!out.empty() && out.back() != '\n') out += '\n';
  out += "\nOptions (each also as --name=value):\n";
  for (const auto& e : entries_) {
    if (e->name_.empty()) {
      out += e->help_ + "\n";
      continue;
    }
    std::string left = e->short_ != 0 ? std::string("  -") + e->short_ + ", --" : "  --";
    left += e->name_;
    if (!e->metavar_.empty()) left += " " + e->metavar_;
    std::string help = e->help_;
    std::vector<std::string> notes;
    if (!e->range_text_.empty()) notes.push_back(e->range_text_);
    if (e->repeated_) notes.push_back("repeatable");
    if (!e->default_text_.empty()) notes.push_back("default " + e->default_text_);
    if (!notes.empty()) help += (help.empty() ? "(" : " (") + JoinWords(notes, "; ") + ")";
    out += left;
    if (left.size() + 1 < kHelpColumn) {
      out += std::string(kHelpColumn - left.size(), ' ');
    } else {
      out += "\n" + std::string(kHelpColumn, ' ');
    }
    AppendWrapped(out, help, kHelpColumn, kHelpColumn);
  }
  out += "  --help" + std::string(kHelpColumn - 8, ' ') + "Show this help and exit.\n";
  if (!epilogue_.empty()) out += "\n" + epilogue_;
  if (out.back() != '\n') out += '\n';
  return out;
}

}  // namespace kiln
