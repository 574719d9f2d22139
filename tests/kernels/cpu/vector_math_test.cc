#include "kernels/cpu/vector_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

namespace kiln::kernels::cpu {
namespace {

// Units in the last place between a and b (finite floats of one sign).
double Ulps(float a, float b) {
  if (a == b) return 0;
  const float spacing =
      std::nextafter(std::fabs(b), std::numeric_limits<float>::infinity()) - std::fabs(b);
  return std::fabs(static_cast<double>(a) - static_cast<double>(b)) / static_cast<double>(spacing);
}

TEST_CASE("VectorExp is within 2 ulp of std::exp and clamps outside [-87, 88]", "[kernels][cpu]") {
  double worst = 0;
  float worst_at = 0;
  // Every 1/1024 over the range, and the points between the polynomial's
  // reduction intervals.
  for (float x = -87.0f; x <= 88.0f; x += 1.0f / 1024) {
    const double u = Ulps(VectorExp(x), std::exp(x));
    if (u > worst) {
      worst = u;
      worst_at = x;
    }
  }
  INFO("worst " << worst << " ulp at " << worst_at);
  CHECK(worst <= 2.0);
  CHECK(VectorExp(0.0f) == 1.0f);
  CHECK(VectorExp(-1000.0f) < 1e-37f);
  CHECK(VectorExp(-1000.0f) >= 0.0f);
  CHECK(std::isfinite(VectorExp(1000.0f)));
  CHECK(VectorExp(1000.0f) > 1e38f);
}

TEST_CASE("VectorTanh is within 2e-7 of std::tanh and saturates to +-1", "[kernels][cpu]") {
  double worst = 0;
  for (float u = -20.0f; u <= 20.0f; u += 1.0f / 4096) {
    worst = std::max(
        worst, std::fabs(static_cast<double>(VectorTanh(u)) - static_cast<double>(std::tanh(u))));
  }
  CHECK(worst < 2e-7);
  CHECK(VectorTanh(0.0f) == 0.0f);
  CHECK(VectorTanh(100.0f) == 1.0f);
  CHECK(VectorTanh(-100.0f) == -1.0f);
  CHECK(VectorTanh(-1e30f) == -1.0f);
}

}  // namespace
}  // namespace kiln::kernels::cpu
