#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "kernels/cpu/lane_sums_avx2.h"
#include "kernels/cpu/vector_math.h"

namespace kiln::kernels::cpu {
namespace {

// The first key (kv 0) or value (kv 1) row of `block`.
const float* BlockRows(const float* layer_cache, int64_t block, int kv, int block_size, int C) {
  return layer_cache + (block * 2 + kv) * block_size * C;
}

// One (row, head): its query q (hs floats), the n positions of its sequence's
// table. Scores go to s (n floats); the result to y (hs floats).
struct HeadTask {
  const float* q;
  const float* layer_cache;
  const int32_t* table;
  int n, h, hs, bs, C;
  float scale;
  float* s;
  float* y;
};

// exp(s - max) over the scores, and 1 / their sum (vectorized by the
// compiler: vector_math.h).
float Softmax(float* s, int n, float max) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int t = 0; t < n; ++t) {
    s[t] = VectorExp(s[t] - max);
    sum += s[t];
  }
  return 1.0f / sum;
}

// Any head size: one dot product per position, the compiler's vectors.
void AttendHead(const HeadTask& a) {
  const int n = a.n, bs = a.bs, hs = a.hs;
  const float* q = a.q;
  float* s = a.s;
  // Block by block, so each key row is a pointer step, not a lookup.
  float max = -INFINITY;
  for (int t0 = 0; t0 < n; t0 += bs) {
    const float* k = BlockRows(a.layer_cache, a.table[t0 / bs], 0, bs, a.C) + a.h * hs;
    const int end = std::min(n, t0 + bs);
    for (int t = t0; t < end; ++t, k += a.C) {
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int i = 0; i < hs; ++i) dot += q[i] * k[i];
      s[t] = dot * a.scale;
      max = std::max(max, s[t]);
    }
  }
  const float inv = Softmax(s, n, max);
  float* y = a.y;
  std::fill(y, y + hs, 0.0f);
  for (int t0 = 0; t0 < n; t0 += bs) {
    const float* v = BlockRows(a.layer_cache, a.table[t0 / bs], 1, bs, a.C) + a.h * hs;
    const int end = std::min(n, t0 + bs);
    for (int t = t0; t < end; ++t, v += a.C) {
      const float w = s[t] * inv;
#pragma omp simd
      for (int i = 0; i < hs; ++i) y[i] += w * v[i];
    }
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// Head size 8 * V (8 to 64): the query and the output stay in V registers
// each; scores four positions at a time, their sums reduced together
// (lane_sums_avx2.h: the same order as one at a time).
template <int V>
void AttendHeadAvx2(const HeadTask& a) {
  const int n = a.n, bs = a.bs;
  const int64_t C = a.C;
  float* s = a.s;
  __m256 q[static_cast<size_t>(V)];
  for (int i = 0; i < V; ++i) q[i] = _mm256_loadu_ps(a.q + 8 * i);
  const __m128 scale4 = _mm_set1_ps(a.scale);
  __m128 max4 = _mm_set1_ps(-INFINITY);
  float max = -INFINITY;
  for (int t0 = 0; t0 < n; t0 += bs) {
    const float* k = BlockRows(a.layer_cache, a.table[t0 / bs], 0, bs, a.C) + a.h * a.hs;
    const int end = std::min(n, t0 + bs);
    int t = t0;
    for (; t + 4 <= end; t += 4, k += 4 * C) {
      __m256 d0 = _mm256_mul_ps(q[0], _mm256_loadu_ps(k));
      __m256 d1 = _mm256_mul_ps(q[0], _mm256_loadu_ps(k + C));
      __m256 d2 = _mm256_mul_ps(q[0], _mm256_loadu_ps(k + 2 * C));
      __m256 d3 = _mm256_mul_ps(q[0], _mm256_loadu_ps(k + 3 * C));
      for (int i = 1; i < V; ++i) {
        d0 = _mm256_fmadd_ps(q[i], _mm256_loadu_ps(k + 8 * i), d0);
        d1 = _mm256_fmadd_ps(q[i], _mm256_loadu_ps(k + C + 8 * i), d1);
        d2 = _mm256_fmadd_ps(q[i], _mm256_loadu_ps(k + 2 * C + 8 * i), d2);
        d3 = _mm256_fmadd_ps(q[i], _mm256_loadu_ps(k + 3 * C + 8 * i), d3);
      }
      const __m128 dots = _mm_mul_ps(internal::LaneSums4(d0, d1, d2, d3), scale4);
      _mm_storeu_ps(s + t, dots);
      max4 = _mm_max_ps(max4, dots);
    }
    for (; t < end; ++t, k += C) {
      __m256 d = _mm256_mul_ps(q[0], _mm256_loadu_ps(k));
      for (int i = 1; i < V; ++i) d = _mm256_fmadd_ps(q[i], _mm256_loadu_ps(k + 8 * i), d);
      s[t] = internal::LaneSum(d) * a.scale;
      max = std::max(max, s[t]);
    }
  }
  alignas(16) float m[4];
  _mm_store_ps(m, max4);
  max = std::max({max, m[0], m[1], m[2], m[3]});
  const float inv = Softmax(s, n, max);
  __m256 y[static_cast<size_t>(V)];
  for (int i = 0; i < V; ++i) y[i] = _mm256_setzero_ps();
  for (int t0 = 0; t0 < n; t0 += bs) {
    const float* v = BlockRows(a.layer_cache, a.table[t0 / bs], 1, bs, a.C) + a.h * a.hs;
    const int end = std::min(n, t0 + bs);
    for (int t = t0; t < end; ++t, v += C) {
      const __m256 w = _mm256_set1_ps(s[t] * inv);
      for (int i = 0; i < V; ++i) y[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * i), y[i]);
    }
  }
  for (int i = 0; i < V; ++i) _mm256_storeu_ps(a.y + 8 * i, y[i]);
}
#endif

using AttendFn = void (*)(const HeadTask&);

AttendFn AttendFor(int hs) {
#if defined(__AVX2__) && defined(__FMA__)
  switch (hs) {
    case 8:
      return AttendHeadAvx2<1>;
    case 16:
      return AttendHeadAvx2<2>;
    case 24:
      return AttendHeadAvx2<3>;
    case 32:
      return AttendHeadAvx2<4>;
    case 40:
      return AttendHeadAvx2<5>;
    case 48:
      return AttendHeadAvx2<6>;
    case 56:
      return AttendHeadAvx2<7>;
    case 64:
      return AttendHeadAvx2<8>;
    default:
      break;
  }
#endif
  return AttendHead;
}

}  // namespace

void AppendKv(float* layer_cache, const float* qkv, const int32_t* slot, int N, int block_size,
              int C) {
  const auto bytes = sizeof(float) * static_cast<size_t>(C);
  for (int r = 0; r < N; ++r) {
    const int64_t block = slot[r] / block_size, row = slot[r] % block_size;
    float* k = layer_cache + ((block * 2 + 0) * block_size + row) * C;
    float* v = layer_cache + ((block * 2 + 1) * block_size + row) * C;
    const float* src = qkv + static_cast<int64_t>(r) * 3 * C;
    std::memcpy(k, src + C, bytes);
    std::memcpy(v, src + 2 * C, bytes);
  }
}

void PagedAttentionForward(float* out, const float* qkv, const float* layer_cache,
                           const int32_t* row_seq, const int32_t* row_pos, const int32_t* tables,
                           int table_width, int N, int block_size, int C, int NH) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int max_len = N > 0 ? *std::max_element(row_pos, row_pos + N) + 1 : 0;
  const AttendFn attend = AttendFor(hs);
#pragma omp parallel
  {
    // Each thread's scores, kept between calls (one per layer and step).
    thread_local std::vector<float> scores;
    if (scores.size() < static_cast<size_t>(max_len)) scores.resize(static_cast<size_t>(max_len));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int r = 0; r < N; ++r) {
      for (int h = 0; h < NH; ++h) {
        attend({.q = qkv + static_cast<int64_t>(r) * 3 * C + h * hs,
                .layer_cache = layer_cache,
                .table = tables + static_cast<int64_t>(row_seq[r]) * table_width,
                .n = row_pos[r] + 1,
                .h = h,
                .hs = hs,
                .bs = block_size,
                .C = C,
                .scale = scale,
                .s = scores.data(),
                .y = out + static_cast<int64_t>(r) * C + h * hs});
      }
    }
  }
}

}  // namespace kiln::kernels::cpu
