#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/vector_math.h"

namespace kiln::kernels::cpu {
namespace {

// The first key (kv 0) or value (kv 1) row of `block`.
const float* BlockRows(const float* layer_cache, int64_t block, int kv, int block_size, int C) {
  return layer_cache + (block * 2 + kv) * block_size * C;
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
  const int hs = C / NH, bs = block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int max_len = N > 0 ? *std::max_element(row_pos, row_pos + N) + 1 : 0;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(max_len));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int r = 0; r < N; ++r) {
      for (int h = 0; h < NH; ++h) {
        const int n = row_pos[r] + 1;  // Positions attended.
        const int32_t* table = tables + static_cast<int64_t>(row_seq[r]) * table_width;
        const float* q = qkv + static_cast<int64_t>(r) * 3 * C + h * hs;
        float* s = scores.data();
        // Block by block, so each key row is a pointer step, not a lookup.
        float max = -INFINITY;
        for (int t0 = 0; t0 < n; t0 += bs) {
          const float* k = BlockRows(layer_cache, table[t0 / bs], 0, bs, C) + h * hs;
          const int end = std::min(n, t0 + bs);
          for (int t = t0; t < end; ++t, k += C) {
            float dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int i = 0; i < hs; ++i) dot += q[i] * k[i];
            s[t] = dot * scale;
            max = std::max(max, s[t]);
          }
        }
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int t = 0; t < n; ++t) {
          s[t] = VectorExp(s[t] - max);
          sum += s[t];
        }
        const float inv = 1.0f / sum;
        float* y = out + static_cast<int64_t>(r) * C + h * hs;
        std::fill(y, y + hs, 0.0f);
        for (int t0 = 0; t0 < n; t0 += bs) {
          const float* v = BlockRows(layer_cache, table[t0 / bs], 1, bs, C) + h * hs;
          const int end = std::min(n, t0 + bs);
          for (int t = t0; t < end; ++t, v += C) {
            const float w = s[t] * inv;
#pragma omp simd
            for (int i = 0; i < hs; ++i) y[i] += w * v[i];
          }
        }
      }
    }
  }
}

}  // namespace kiln::kernels::cpu
