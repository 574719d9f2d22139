#include "worker/train/schedule.h"

#include <catch2/catch.hpp>

namespace kiln::train {
namespace {

TEST_CASE("the schedule warms up linearly then decays by cosine to the floor", "[train]") {
  Schedule s{.peak = 1.0, .warmup_steps = 10, .total_steps = 110, .min_ratio = 0.1};
  CHECK(s.At(1) == Approx(0.1));
  CHECK(s.At(5) == Approx(0.5));
  CHECK(s.At(10) == Approx(1.0));
  CHECK(s.At(60) == Approx(0.55));  // Halfway through the decay: the mean of peak and floor.
  CHECK(s.At(110) == Approx(0.1));
  CHECK(s.At(500) == Approx(0.1));  // Past the end: stays at the floor.
  for (int64_t step = 11; step < 110; ++step) CHECK(s.At(step + 1) <= s.At(step));
  Schedule flat{.peak = 2.0, .warmup_steps = 0, .total_steps = 1, .min_ratio = 1.0};
  CHECK(flat.At(1) == Approx(2.0));
}

}  // namespace
}  // namespace kiln::train
