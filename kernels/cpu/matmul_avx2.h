// Internal to kernels/cpu: the forward matmul over several input rows
// (prefill, batched decoding, training) in AVX2 + FMA register tiles, for
// MatmulForward (ops.cc, float weights) and MatmulForwardBf16 (bf16 weights).
// A single row keeps their one-dot-product-at-a-time loops, which stream each
// weight row front to back.
//
// out[n, o] = bias[o] + sum_c inp[n, c] * weight[o, c] is computed 3 rows x
// 4 outputs at a time: 12 eight-lane sums, 3 input vectors and a weight
// vector fill the 16 AVX registers, so each load feeds 3 or 4 fused
// multiply-adds (a 2 x 4 tile of separate multiplies and adds, the loop
// before, ran at about 2/3 of this speed). Each output is one vector sum
// over C in steps of 8, its lanes added pairwise, then the last C % 8
// products in order: the same arithmetic whatever tile computes it.
#ifndef KILN_KERNELS_CPU_MATMUL_AVX2_H_
#define KILN_KERNELS_CPU_MATMUL_AVX2_H_

#if defined(__AVX2__) && defined(__FMA__)
#define KILN_MATMUL_AVX2 1

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/lane_sums_avx2.h"
#include "kernels/cpu/matmul_bf16.h"

namespace kiln::kernels::cpu::internal {

inline __m256 LoadWeights8(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 LoadWeights8(const uint16_t* w) {
  // bf16 is float's upper half: widen to 32 bits and shift into place.
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline float WeightAsFloat(float w) { return w; }
inline float WeightAsFloat(uint16_t w) { return Bf16ToFloat(w); }

template <int RM, int RN, class W>
inline void MatmulTileAvx2(float* out, const float* inp, const W* weight, const float* bias, int n,
                           int o, int C, int OC, const W* prefetch = nullptr,
                           int prefetch_rows = 0) {
  constexpr int kLine = 64 / static_cast<int>(sizeof(W));  // Weights per cache line.
  constexpr auto kM = static_cast<std::size_t>(RM), kN = static_cast<std::size_t>(RN);
  __m256 acc[kM][kN];
  for (int i = 0; i < RM; ++i) {
    for (int j = 0; j < RN; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  int c = 0;
  for (; c + 8 <= C; c += 8) {
    if (prefetch != nullptr && c % kLine == 0) {
      for (int j = 0; j < prefetch_rows; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(prefetch + static_cast<int64_t>(j) * C + c),
                     _MM_HINT_T0);
      }
    }
    __m256 x[kM];
    for (int i = 0; i < RM; ++i) x[i] = _mm256_loadu_ps(inp + static_cast<int64_t>(n + i) * C + c);
    for (int j = 0; j < RN; ++j) {
      const __m256 w = LoadWeights8(weight + static_cast<int64_t>(o + j) * C + c);
      for (int i = 0; i < RM; ++i) acc[i][j] = _mm256_fmadd_ps(x[i], w, acc[i][j]);
    }
  }
  for (int i = 0; i < RM; ++i) {
    const float* x = inp + static_cast<int64_t>(n + i) * C;
    float* y = out + static_cast<int64_t>(n + i) * OC + o;
    // The lane sums (four at once for a 4-wide tile, in LaneSum's order),
    // then the last C % 8 products in order, then the bias.
    alignas(16) float s[kN];
    if constexpr (RN == 4) {
      _mm_store_ps(s, LaneSums4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
    } else {
      for (int j = 0; j < RN; ++j) s[j] = LaneSum(acc[i][j]);
    }
    for (int j = 0; j < RN; ++j) {
      const W* w = weight + static_cast<int64_t>(o + j) * C;
      for (int k = c; k < C; ++k) s[j] += x[k] * WeightAsFloat(w[k]);
      y[j] = s[j] + (bias != nullptr ? bias[o + j] : 0.0f);
    }
  }
}

// Rows n0..n1 x outputs o0..o1: 3 x 4 tiles, narrower ones at the edges.
// The first pass over the block's outputs brings their weights in from L3
// or memory (the other passes find them in L2); there each 4-output tile
// prefetches the weight rows of the tile after it, a line per row every
// 64 bytes of its own rows, which the hardware prefetchers alone did not
// keep up with (N = 18, C = 288: 41 -> 51 GFLOP/s on one core).
template <int RM, class W>
inline void MatmulPassAvx2(float* out, const float* inp, const W* weight, const float* bias, int n,
                           bool first, int o0, int o1, int C, int OC) {
  const int o4 = o0 + (o1 - o0) / 4 * 4;
  for (int o = o0; o < o4; o += 4) {
    const int next = o + 4;
    if (first && next < OC) {
      MatmulTileAvx2<RM, 4>(out, inp, weight, bias, n, o, C, OC,
                            weight + static_cast<int64_t>(next) * C, std::min(4, OC - next));
    } else {
      MatmulTileAvx2<RM, 4>(out, inp, weight, bias, n, o, C, OC);
    }
  }
  for (int o = o4; o < o1; ++o) MatmulTileAvx2<RM, 1>(out, inp, weight, bias, n, o, C, OC);
}

template <class W>
inline void MatmulBlockAvx2(float* out, const float* inp, const W* weight, const float* bias,
                            int n0, int n1, int o0, int o1, int C, int OC) {
  int n = n0;
  for (; n + 3 <= n1; n += 3) MatmulPassAvx2<3>(out, inp, weight, bias, n, n == n0, o0, o1, C, OC);
  if (n + 2 == n1) {
    MatmulPassAvx2<2>(out, inp, weight, bias, n, n == n0, o0, o1, C, OC);
  } else if (n + 1 == n1) {
    MatmulPassAvx2<1>(out, inp, weight, bias, n, n == n0, o0, o1, C, OC);
  }
}

// The whole product, parallel over blocks of 48 outputs x 48 rows, outputs
// first: each thread takes whole output blocks (48 weight rows, kept in
// cache while every input row passes them, 3 at a time), so the threads
// share the work evenly whatever the number of rows.
template <class W>
void MatmulRowsAvx2(float* out, const float* inp, const W* weight, const float* bias, int N, int C,
                    int OC) {
  constexpr int kOut = 48, kRows = 48;
  const int out_blocks = (OC + kOut - 1) / kOut, row_blocks = (N + kRows - 1) / kRows;
#pragma omp parallel for collapse(2) schedule(static)
  for (int ob = 0; ob < out_blocks; ++ob) {
    for (int rb = 0; rb < row_blocks; ++rb) {
      MatmulBlockAvx2(out, inp, weight, bias, rb * kRows, std::min(N, rb * kRows + kRows),
                      ob * kOut, std::min(OC, ob * kOut + kOut), C, OC);
    }
  }
}

}  // namespace kiln::kernels::cpu::internal

#endif  // defined(__AVX2__) && defined(__FMA__)
#endif  // KILN_KERNELS_CPU_MATMUL_AVX2_H_
