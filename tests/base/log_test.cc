#include "base/log.h"

#include <mutex>
#include <vector>

#include <catch2/catch.hpp>

namespace kiln::log {
namespace {

class CaptureSink final : public Sink {
 public:
  void Write(std::string_view line) override {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.emplace_back(line);
  }
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// Routes logging to a capture for one test and restores the defaults after.
struct Captured {
  Captured() { SetSink(&sink); }
  ~Captured() {
    SetSink(nullptr);
    SetLevel(Level::kInfo);
    SetFormat(Format::kJson);
  }
  CaptureSink sink;
};

TEST_CASE("JSON lines carry ts, level, logger, msg, then the fields in order", "[base][log]") {
  std::string line = FormatLine(
      Format::kJson, Level::kInfo, "controller", "reconciled", {{"controller", "trainingjob"}},
      {{"namespace", "ml"}, {"name", "llama"}, {"attempt", 3}}, 1795000000.25);
  CHECK(line ==
        "{\"ts\":\"2026-11-18T11:06:40.250Z\",\"level\":\"info\",\"logger\":\"controller\","
        "\"msg\":\"reconciled\",\"controller\":\"trainingjob\",\"namespace\":\"ml\","
        "\"name\":\"llama\",\"attempt\":3}\n");
  auto parsed = nlohmann::json::parse(line);
  CHECK(parsed["name"] == "llama");
}

TEST_CASE("text lines are readable key=value", "[base][log]") {
  std::string line =
      FormatLine(Format::kText, Level::kWarn, "mgr", "slow", {}, {{"ms", 12}, {"who", "a b"}}, 0.0);
  CHECK(line == "1970-01-01T00:00:00.000Z warn mgr slow ms=12 who=a b\n");
}

TEST_CASE("messages with quotes, newlines or invalid UTF-8 stay one valid JSON line",
          "[base][log]") {
  std::string line =
      FormatLine(Format::kJson, Level::kError, "", "bad \"thing\"\nhappened \xff", {}, {}, 0.0);
  CHECK(line.find('\n') == line.size() - 1);
  auto parsed = nlohmann::json::parse(line);
  CHECK(parsed["msg"].get<std::string>().rfind("bad \"thing\"\nhappened", 0) == 0);
  CHECK(!parsed.contains("logger"));
}

TEST_CASE("loggers derive names and fields, and the level filters", "[base][log]") {
  Captured c;
  Logger root("controller");
  Logger l = root.WithName("trainingjob").WithValues({{"namespace", "ml"}});
  l.Info("hello", {{"name", "a"}});
  l.Debug("hidden");
  l.Error(Status::Unavailable("apiserver down"), "reconcile failed");
  SetLevel(Level::kDebug);
  l.Debug("shown");
  auto lines = c.sink.lines();
  REQUIRE(lines.size() == 3);
  auto first = nlohmann::json::parse(lines[0]);
  CHECK(first["logger"] == "controller.trainingjob");
  CHECK(first["namespace"] == "ml");
  CHECK(first["name"] == "a");
  auto second = nlohmann::json::parse(lines[1]);
  CHECK(second["level"] == "error");
  CHECK(second["error"].get<std::string>().find("apiserver down") != std::string::npos);
  CHECK(nlohmann::json::parse(lines[2])["msg"] == "shown");
  // The parent is unchanged by what was derived from it.
  root.Info("root");
  CHECK(!nlohmann::json::parse(c.sink.lines().back()).contains("namespace"));
}

TEST_CASE("log level and format names parse, others are refused", "[base][log]") {
  CHECK(*ParseLevel("warn") == Level::kWarn);
  CHECK(*ParseFormat("text") == Format::kText);
  CHECK(ParseLevel("verbose").status().message().find("want debug, info") != std::string::npos);
  CHECK(!ParseFormat("xml").ok());
}

}  // namespace
}  // namespace kiln::log
