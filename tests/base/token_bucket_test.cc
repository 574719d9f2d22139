#include "base/token_bucket.h"

#include <catch2/catch.hpp>

#include "tests/support/fake_clock.h"

namespace kiln {
namespace {

using std::chrono::milliseconds;
using testing::FakeClock;

TEST_CASE("a burst is free, then tokens come at the rate", "[base][token_bucket]") {
  FakeClock clock;
  TokenBucket bucket(10, 3, &clock);  // 10/s, burst 3.
  for (int i = 0; i < 3; ++i) CHECK(bucket.Reserve() == Clock::Duration::zero());
  CHECK(bucket.Reserve() == milliseconds(100));
  CHECK(bucket.Reserve() == milliseconds(200));  // Reservations queue up in order.
  // Reserved tokens were due at 100 and 200 ms; the next is due at 300 ms.
  clock.Advance(milliseconds(250));
  CHECK(bucket.Reserve() == milliseconds(50));
}

TEST_CASE("TryAccept never borrows from the future", "[base][token_bucket]") {
  FakeClock clock;
  TokenBucket bucket(2, 1, &clock);
  CHECK(bucket.TryAccept());
  CHECK_FALSE(bucket.TryAccept());
  clock.Advance(milliseconds(499));
  CHECK_FALSE(bucket.TryAccept());
  clock.Advance(milliseconds(1));
  CHECK(bucket.TryAccept());
}

TEST_CASE("idle time refills only up to the burst", "[base][token_bucket]") {
  FakeClock clock;
  TokenBucket bucket(100, 5, &clock);
  for (int i = 0; i < 5; ++i) bucket.Wait();
  clock.Advance(std::chrono::hours(1));
  int free = 0;
  while (bucket.TryAccept()) ++free;
  CHECK(free == 5);
}

TEST_CASE("Wait sleeps exactly the reserved delay and rate 0 disables limiting",
          "[base][token_bucket]") {
  FakeClock clock;
  TokenBucket bucket(4, 1, &clock);
  bucket.Wait();
  bucket.Wait();
  REQUIRE(clock.sleeps().size() == 1);
  CHECK(clock.sleeps()[0] == milliseconds(250));
  TokenBucket unlimited(0, 1, &clock);
  for (int i = 0; i < 1000; ++i) CHECK(unlimited.TryAccept());
}

}  // namespace
}  // namespace kiln
