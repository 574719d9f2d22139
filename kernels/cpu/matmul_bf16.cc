#include "kernels/cpu/matmul_bf16.h"

#include "kernels/cpu/matmul_avx2.h"

namespace kiln::kernels::cpu {
namespace {

// One output: x . w with w widened from bf16, four independent vector sums
// (as RowDot in ops.cc). memcpy into locals: unaligned loads, and no vector
// passed or returned by value.
inline float RowDotBf16(const float* x, const uint16_t* w, int C) {
  int c = 0;
  float sum = 0;
#if defined(__GNUC__)
  typedef float V __attribute__((vector_size(32)));
  typedef uint16_t H __attribute__((vector_size(16)));
  typedef uint32_t U __attribute__((vector_size(32)));
  V s[4] = {}, a, b;
  H h;
  U u;
  for (; c + 32 <= C; c += 32) {
    for (int k = 0; k < 4; ++k) {
      __builtin_memcpy(&a, x + c + 8 * k, sizeof a);
      __builtin_memcpy(&h, w + c + 8 * k, sizeof h);
      u = __builtin_convertvector(h, U) << 16;
      __builtin_memcpy(&b, &u, sizeof b);
      s[k] += a * b;
    }
  }
  for (; c + 8 <= C; c += 8) {
    __builtin_memcpy(&a, x + c, sizeof a);
    __builtin_memcpy(&h, w + c, sizeof h);
    u = __builtin_convertvector(h, U) << 16;
    __builtin_memcpy(&b, &u, sizeof b);
    s[0] += a * b;
  }
  const V t = (s[0] + s[1]) + (s[2] + s[3]);
  sum = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
#endif
  for (; c < C; ++c) sum += x[c] * Bf16ToFloat(w[c]);
  return sum;
}

}  // namespace

std::vector<uint16_t> ToBf16(std::span<const float> x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = FloatToBf16(x[i]);
  return out;
}

void MatmulForwardBf16(float* out, const float* inp, const uint16_t* weight, const float* bias,
                       int N, int C, int OC) {
#if KILN_MATMUL_AVX2
  if (N > 1) return internal::MatmulRowsAvx2(out, inp, weight, bias, N, C, OC);
#endif
#pragma omp parallel for schedule(static)
  for (int o = 0; o < OC; ++o) {
    const uint16_t* w = weight + static_cast<int64_t>(o) * C;
    const float b = bias != nullptr ? bias[o] : 0.0f;
    for (int n = 0; n < N; ++n) {
      out[static_cast<int64_t>(n) * OC + o] =
          RowDotBf16(inp + static_cast<int64_t>(n) * C, w, C) + b;
    }
  }
}

}  // namespace kiln::kernels::cpu
