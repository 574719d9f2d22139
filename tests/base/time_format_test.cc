#include "base/time_format.h"

#include <catch2/catch.hpp>

namespace kiln {
namespace {

TEST_CASE("timestamps format as RFC 3339 UTC with 0, 3 or 6 fraction digits", "[base][time]") {
  using namespace std::chrono;
  const system_clock::time_point t =
      system_clock::time_point(seconds(1795000000)) + microseconds(250999);
  CHECK(FormatRfc3339(t) == "2026-11-18T11:06:40Z");
  CHECK(FormatRfc3339(t, 3) == "2026-11-18T11:06:40.250Z");  // Truncated, not rounded.
  CHECK(FormatRfc3339(t, 6) == "2026-11-18T11:06:40.250999Z");
  CHECK(FormatRfc3339(system_clock::time_point{}, 6) == "1970-01-01T00:00:00.000000Z");
}

TEST_CASE("RFC 3339 times parse with fractions and zone offsets", "[base][time]") {
  using namespace std::chrono;
  const auto base = sys_seconds(seconds(1795000000));  // 2026-11-18T11:06:40Z
  auto at = [](const char* text) {
    auto t = ParseRfc3339(text);
    INFO(text << ": " << t.status().ToString());
    REQUIRE(t.ok());
    return *t;
  };
  CHECK(at("2026-11-18T11:06:40Z") == base);
  CHECK(at("2026-11-18t11:06:40z") == base);
  CHECK(at("2026-11-18T11:06:40.25Z") == base + milliseconds(250));
  CHECK(at("2026-11-18T11:06:40.250999Z") == base + microseconds(250999));
  CHECK(at("2026-11-18T11:06:40.250999999Z") == base + microseconds(250999));  // Truncated.
  CHECK(at("2026-11-18T13:06:40+02:00") == base);
  CHECK(at("2026-11-18T06:36:40-04:30") == base);
  // Far past the nanosecond clock's 2262 (credential plugins write such expiries).
  CHECK(at("2999-01-01T00:00:00Z") > at("2262-04-12T00:00:00Z"));
  // What FormatRfc3339 writes reads back.
  const auto t = system_clock::time_point(seconds(1795000000)) + microseconds(123456);
  CHECK(at(FormatRfc3339(t, 6).c_str()) == time_point_cast<microseconds>(t));
  for (const char* bad :
       {"", "2026-11-18", "2026-11-18T11:06:40", "2026-11-18 11:06:40Z", "2026-02-30T00:00:00Z",
        "2026-11-18T24:00:00Z", "2026-11-18T11:06:40.Z", "2026-11-18T11:06:40+2:00",
        "2026-11-18T11:06:40Zjunk", "20x6-11-18T11:06:40Z"}) {
    INFO(bad);
    auto r = ParseRfc3339(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(r.status().message(), Catch::Contains("RFC 3339"));
  }
}

}  // namespace
}  // namespace kiln
