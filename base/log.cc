#include "base/log.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>

#include "base/time_format.h"

namespace kiln::log {
namespace {

class StderrSink : public Sink {
 public:
  void Write(std::string_view line) override {
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
  }
};

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_format{static_cast<int>(Format::kJson)};
std::mutex g_sink_mu;
Sink* g_sink = nullptr;  // Guarded by g_sink_mu; nullptr = stderr.

const char* LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

// Log lines carry milliseconds. Whole seconds and the fraction are converted
// apart: scaling the whole double to nanoseconds would lose the fraction's
// last bits at today's epoch (40.25 s would print as .249).
std::string Timestamp(double unix_seconds) {
  const double whole = std::floor(unix_seconds);
  const auto t = std::chrono::system_clock::time_point(
      std::chrono::seconds(static_cast<long long>(whole)) +
      std::chrono::microseconds(static_cast<long long>((unix_seconds - whole) * 1e6)));
  return FormatRfc3339(t, 3);
}

}  // namespace

void SetLevel(Level level) { g_level = static_cast<int>(level); }
Level GetLevel() { return static_cast<Level>(g_level.load()); }
void SetFormat(Format format) { g_format = static_cast<int>(format); }

void SetSink(Sink* sink) {
  std::lock_guard<std::mutex> lock(g_sink_mu);
  g_sink = sink;
}

StatusOr<Level> ParseLevel(std::string_view text) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (text == LevelName(l)) return l;
  }
  return Status::InvalidArgument("log level \"" + std::string(text) +
                                 "\": want debug, info, warn or error");
}

StatusOr<Format> ParseFormat(std::string_view text) {
  if (text == "json") return Format::kJson;
  if (text == "text") return Format::kText;
  return Status::InvalidArgument("log format \"" + std::string(text) + "\": want json or text");
}

std::string FormatLine(Format format, Level level, std::string_view logger, std::string_view msg,
                       const Fields& base, const Fields& fields, double unix_seconds) {
  if (format == Format::kJson) {
    // Keys in a fixed order (ts, level, logger, msg, fields) so lines read
    // well and diff cleanly; ordered_json keeps insertion order.
    nlohmann::ordered_json line;
    line["ts"] = Timestamp(unix_seconds);
    line["level"] = LevelName(level);
    if (!logger.empty()) line["logger"] = logger;
    line["msg"] = msg;
    for (const auto* fs : {&base, &fields}) {
      for (const auto& [k, v] : *fs) line[k] = v;
    }
    // Invalid UTF-8 in a message must not throw or drop the line.
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  std::string out = Timestamp(unix_seconds) + " " + LevelName(level);
  if (!logger.empty()) out += " " + std::string(logger);
  out += " " + std::string(msg);
  for (const auto* fs : {&base, &fields}) {
    for (const auto& [k, v] : *fs) {
      out += " " + k + "=" +
             (v.is_string() ? v.get<std::string>()
                            : v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
  }
  return out + "\n";
}

Logger::Logger(std::string name, Fields fields)
    : name_(std::move(name)), fields_(std::make_shared<const Fields>(std::move(fields))) {}

Logger Logger::WithName(std::string_view name) const {
  Logger l = *this;
  l.name_ = name_.empty() ? std::string(name) : name_ + "." + std::string(name);
  return l;
}

Logger Logger::WithValues(Fields fields) const {
  Fields merged = *fields_;
  for (auto& f : fields) merged.push_back(std::move(f));
  return Logger(name_, std::move(merged));
}

void Logger::Debug(std::string_view msg, const Fields& fields) const {
  Log(Level::kDebug, msg, fields);
}
void Logger::Info(std::string_view msg, const Fields& fields) const {
  Log(Level::kInfo, msg, fields);
}
void Logger::Warn(std::string_view msg, const Fields& fields) const {
  Log(Level::kWarn, msg, fields);
}
void Logger::Error(const Status& status, std::string_view msg, const Fields& fields) const {
  if (!Enabled(Level::kError)) return;
  Fields with_error = fields;
  with_error.emplace_back("error", status.ToString());
  Log(Level::kError, msg, with_error);
}

void Logger::Log(Level level, std::string_view msg, const Fields& fields) const {
  if (!Enabled(level)) return;
  double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string line =
      FormatLine(static_cast<Format>(g_format.load()), level, name_, msg, *fields_, fields, now);
  static StderrSink stderr_sink;
  std::lock_guard<std::mutex> lock(g_sink_mu);
  (g_sink != nullptr ? g_sink : &stderr_sink)->Write(line);
}

}  // namespace kiln::log
