// Matrix-vector products over bf16 weights for CPU decoding: half the bytes
// of float weights, so a memory-bound decode step streams half as much (and a
// small model's weights may fit in the last-level cache). Inputs, outputs,
// biases and the arithmetic stay float; each weight widens exactly to float
// (bf16 is float's upper 16 bits). Reference: MatmulForward (ops.h) on the
// weights widened by Bf16ToFloat; tests/kernels/cpu/matmul_bf16_test.cc.
#ifndef KILN_KERNELS_CPU_MATMUL_BF16_H_
#define KILN_KERNELS_CPU_MATMUL_BF16_H_

#include <bit>
#include <cstdint>
#include <span>
#include <vector>

namespace kiln::kernels::cpu {

// float -> bf16 with round-to-nearest-even (NaN stays NaN).
inline uint16_t FloatToBf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
inline float Bf16ToFloat(uint16_t x) {
  return std::bit_cast<float>(static_cast<uint32_t>(x) << 16);
}

std::vector<uint16_t> ToBf16(std::span<const float> x);

// out[n,o] = bias[o] + sum_c inp[n,c] * weight[o,c]   (bias may be null).
// One row: parallel over output features, each bf16 weight row read once,
// front to back. Several rows: AVX2 register tiles (matmul_avx2.h) where
// the kernels are built for AVX2 and FMA.
void MatmulForwardBf16(float* out, const float* inp, const uint16_t* weight, const float* bias,
                       int N, int C, int OC);

}  // namespace kiln::kernels::cpu

#endif  // KILN_KERNELS_CPU_MATMUL_BF16_H_
