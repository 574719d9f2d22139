// Exp and tanh for float that the compiler can vectorize (plain arithmetic
// and bit casts, no libm calls): the CPU kernels' GELU and the serving
// decoder's softmax run them 8 at a time with AVX2. Exp is the Cephes
// single-precision scheme — x = n ln2 + r with |r| <= ln2/2, a degree-7
// polynomial for e^r, times 2^n — within 2 ulp of std::exp on [-87, 88]
// (inputs outside are clamped: 0 and 3.4e38 stand in for underflow and
// overflow). tanh(u) = 1 - 2 / (e^(2u) + 1), within 2e-7 absolute of
// std::tanh. Tests: tests/kernels/cpu/vector_math_test.cc.
#ifndef KILN_KERNELS_CPU_VECTOR_MATH_H_
#define KILN_KERNELS_CPU_VECTOR_MATH_H_

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace kiln::kernels::cpu {

inline float VectorExp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  // r = x - n ln2, with ln2 split in two for accuracy.
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

inline float VectorTanh(float u) { return 1.0f - 2.0f / (VectorExp(2.0f * u) + 1.0f); }

}  // namespace kiln::kernels::cpu

#endif  // KILN_KERNELS_CPU_VECTOR_MATH_H_
