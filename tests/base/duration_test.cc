#include "base/duration.h"

#include <catch2/catch.hpp>

namespace kiln {
namespace {

using std::chrono::nanoseconds;

TEST_CASE("durations parse as Go writes them", "[base][duration]") {
  CHECK(*ParseDuration("0") == nanoseconds(0));
  CHECK(*ParseDuration("15s") == std::chrono::seconds(15));
  CHECK(*ParseDuration("500ms") == std::chrono::milliseconds(500));
  CHECK(*ParseDuration("1h30m") == std::chrono::minutes(90));
  CHECK(*ParseDuration("1.5h") == std::chrono::minutes(90));
  CHECK(*ParseDuration("2m3.5s") == std::chrono::milliseconds(123500));
  CHECK(*ParseDuration("10us") == std::chrono::microseconds(10));
  CHECK(*ParseDuration("7ns") == nanoseconds(7));
}

TEST_CASE("bad durations are refused with the reason", "[base][duration]") {
  auto why = [](const char* text) { return ParseDuration(text).status().message(); };
  CHECK(why("").find("empty") != std::string::npos);
  CHECK(why("10").find("missing unit after 10") != std::string::npos);
  CHECK(why("10d").find("unknown unit \"d\"") != std::string::npos);
  CHECK(why("-5s").find("negative") != std::string::npos);
  CHECK(why("s").find("expected a number") != std::string::npos);
  CHECK(why("1..5s").find("malformed") != std::string::npos);
  CHECK(ParseDuration("1e3s").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("durations format in the shortest Go spelling and parse back", "[base][duration]") {
  CHECK(FormatDuration(nanoseconds(0)) == "0s");
  CHECK(FormatDuration(std::chrono::milliseconds(250)) == "250ms");
  CHECK(FormatDuration(std::chrono::seconds(90)) == "1m30s");
  CHECK(FormatDuration(std::chrono::hours(2)) == "2h0m0s");
  CHECK(FormatDuration(std::chrono::milliseconds(1500)) == "1.5s");
  CHECK(FormatDuration(std::chrono::microseconds(3)) == "3us");
  for (const char* text : {"1h2m3.004s", "5ms", "42ns", "3m0.5s"}) {
    CHECK(*ParseDuration(FormatDuration(*ParseDuration(text))) == *ParseDuration(text));
  }
}

}  // namespace
}  // namespace kiln
