// Internal to kernels/cpu: sums of the eight lanes of AVX vectors, always in
// the same order, ((0+1)+(2+3))+((4+5)+(6+7)), so a dot product computed one
// at a time or four at once rounds the same way. The matmul tiles
// (matmul_avx2.h) and the paged attention's scores use them.
#ifndef KILN_KERNELS_CPU_LANE_SUMS_AVX2_H_
#define KILN_KERNELS_CPU_LANE_SUMS_AVX2_H_

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

namespace kiln::kernels::cpu::internal {

inline float LaneSum(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

// LaneSum of a, b, c and d, the same additions in the same order: pairs,
// then pairs of pairs within each half, then the halves.
inline __m128 LaneSums4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

}  // namespace kiln::kernels::cpu::internal

#endif  // defined(__AVX2__) && defined(__FMA__)
#endif  // KILN_KERNELS_CPU_LANE_SUMS_AVX2_H_
