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

}  // namespace
}  // namespace kiln
