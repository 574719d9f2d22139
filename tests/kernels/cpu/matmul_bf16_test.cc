#include "kernels/cpu/matmul_bf16.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/ops.h"

namespace kiln::kernels::cpu {
namespace {

TEST_CASE("FloatToBf16 rounds to nearest even and widens back exactly", "[kernels][cpu]") {
  CHECK(Bf16ToFloat(FloatToBf16(1.0f)) == 1.0f);
  CHECK(Bf16ToFloat(FloatToBf16(-2.5f)) == -2.5f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even, 1.
  CHECK(Bf16ToFloat(FloatToBf16(1.0f + 1.0f / 256)) == 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: the even is 1 + 2^-6.
  CHECK(Bf16ToFloat(FloatToBf16(1.0f + 3.0f / 256)) == 1.0f + 1.0f / 64);
  CHECK(Bf16ToFloat(FloatToBf16(1.0f + 1.0f / 200)) == 1.0f + 1.0f / 128);
  CHECK(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::infinity()))));
  // Rounding error at most half a bf16 spacing: 2^-8 of the value.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-100, 100);
  for (int i = 0; i < 10000; ++i) {
    const float x = u(rng);
    CHECK(std::fabs(Bf16ToFloat(FloatToBf16(x)) - x) <= std::fabs(x) / 256);
  }
}

TEST_CASE("MatmulForwardBf16 equals MatmulForward on the widened weights", "[kernels][cpu]") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  // C around the vector widths (32 and 8) and tails; N = 1 (decoding) and more.
  for (const auto& [N, C, OC] :
       {std::tuple{1, 288, 100}, {1, 77, 33}, {3, 40, 17}, {5, 8, 9}, {2, 1, 4}, {1, 1152, 64}}) {
    std::vector<float> x(static_cast<size_t>(N * C)), w(static_cast<size_t>(OC * C)),
        b(static_cast<size_t>(OC));
    for (float& v : x) v = u(rng);
    for (float& v : w) v = u(rng);
    for (float& v : b) v = u(rng);
    const std::vector<uint16_t> wb = ToBf16(w);
    std::vector<float> widened(w.size());
    for (size_t i = 0; i < w.size(); ++i) widened[i] = Bf16ToFloat(wb[i]);
    for (const float* bias :
         {static_cast<const float*>(b.data()), static_cast<const float*>(nullptr)}) {
      std::vector<float> want(static_cast<size_t>(N * OC)), got(want.size());
      MatmulForward(want.data(), x.data(), widened.data(), bias, N, C, OC);
      MatmulForwardBf16(got.data(), x.data(), wb.data(), bias, N, C, OC);
      INFO("N=" << N << " C=" << C << " OC=" << OC << (bias ? " with bias" : ""));
      // Same products, summed in another order: float rounding only.
      for (size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i] == Approx(want[i]).epsilon(1e-5).margin(1e-5 * std::sqrt(C)));
      }
    }
  }
}

}  // namespace
}  // namespace kiln::kernels::cpu
