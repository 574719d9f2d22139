#include "worker/train/loss_spike.h"

#include <catch2/catch.hpp>

namespace kiln::train {
namespace {

TEST_CASE("a loss far above its recent level is a spike, after warm-up", "[train]") {
  LossSpikeDetector d(/*factor=*/2.0, /*warmup=*/3);
  CHECK(!d.Observe(5.0));
  CHECK(!d.Observe(50.0));  // Still warming up: early losses swing.
  CHECK(!d.Observe(4.0));
  const double level = d.level();
  CHECK(!d.Observe(level * 1.9));
  const double before = d.level();
  CHECK(d.Observe(before * 2.1));
  CHECK(d.level() == before);  // The spike itself does not move the level.
  LossSpikeDetector off(0.0);
  for (int i = 0; i < 100; ++i) CHECK(!off.Observe(i == 50 ? 1e9 : 1.0));
}

TEST_CASE("a falling loss never trips the detector", "[train]") {
  LossSpikeDetector d(1.5, 5);
  for (double loss = 6.0; loss > 1.0; loss *= 0.97) CHECK(!d.Observe(loss));
}

}  // namespace
}  // namespace kiln::train
