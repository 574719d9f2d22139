// Structured logging: one JSON object per line on stderr, in the shape log
// collectors expect from Kubernetes controllers (ts, level, logger, msg, then
// key/value fields such as the object's namespace and name). A Logger is a
// cheap value holding a name and fields; WithName/WithValues derive new ones,
// as in logr. Thread-safe: each line is written whole.
#ifndef KILN_BASE_LOG_H_
#define KILN_BASE_LOG_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"

namespace kiln::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class Format { kJson, kText };

using Field = std::pair<std::string, nlohmann::json>;
using Fields = std::vector<Field>;

// Where finished lines go. The default writes to stderr.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void Write(std::string_view line) = 0;
};

// Process-wide settings; set them once at startup.
void SetLevel(Level level);
Level GetLevel();
void SetFormat(Format format);
// Replaces the sink (nullptr restores stderr). The sink must outlive logging.
void SetSink(Sink* sink);
// "debug", "info", "warn" or "error"; InvalidArgument otherwise.
StatusOr<Level> ParseLevel(std::string_view text);
// "json" or "text"; InvalidArgument otherwise.
StatusOr<Format> ParseFormat(std::string_view text);

class Logger {
 public:
  explicit Logger(std::string name = "", Fields fields = {});

  // "parent.child"
  Logger WithName(std::string_view name) const;
  Logger WithValues(Fields fields) const;

  void Debug(std::string_view msg, const Fields& fields = {}) const;
  void Info(std::string_view msg, const Fields& fields = {}) const;
  void Warn(std::string_view msg, const Fields& fields = {}) const;
  // Adds "error": status.ToString().
  void Error(const Status& status, std::string_view msg, const Fields& fields = {}) const;

  bool Enabled(Level level) const { return level >= GetLevel(); }
  const std::string& name() const { return name_; }

 private:
  void Log(Level level, std::string_view msg, const Fields& fields) const;

  std::string name_;
  std::shared_ptr<const Fields> fields_;
};

// Formats one record; exposed for tests.
std::string FormatLine(Format format, Level level, std::string_view logger, std::string_view msg,
                       const Fields& base, const Fields& fields, double unix_seconds);

}  // namespace kiln::log

#endif  // KILN_BASE_LOG_H_
