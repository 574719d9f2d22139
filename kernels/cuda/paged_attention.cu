// kernels/cuda/paged_attention.h: the append is one block per row; the
// attention one block per (row, head) with the scores in shared memory, the
// softmax by block reductions, and the weighted values summed by warps over
// positions with lanes over the head's dimensions.
#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/paged_attention.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kAttnThreads = 128;
constexpr int kAttnWarps = kAttnThreads / kWarpSize;
constexpr int kMaxHeadSize = 128;
constexpr int kMaxScoreBytes = 40 * 1024;

// Threads for a one-block-per-row kernel over C columns.
unsigned RowThreads(int C) { return static_cast<unsigned>(std::min(256, ((C + 31) / 32) * 32)); }

__global__ void AppendKvKernel(bf16* layer_cache, const bf16* qkv, const int32_t* slot,
                               int block_size, int C) {
  const int r = blockIdx.x;
  const int64_t s = slot[r];
  const int64_t block = s / block_size, offset = s % block_size;
  bf16* k = layer_cache + ((block * 2 + 0) * block_size + offset) * C;
  bf16* v = layer_cache + ((block * 2 + 1) * block_size + offset) * C;
  const bf16* src = qkv + static_cast<int64_t>(r) * 3 * C;
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    k[i] = src[C + i];
    v[i] = src[2 * C + i];
  }
}

// kVector: key rows are read 8 values (16 bytes) at a time (the head size is
// a multiple of 8 and the cache 16-byte aligned).
template <bool kVector>
__global__ void PagedAttentionKernel(bf16* out, const bf16* qkv, const bf16* layer_cache,
                                     const int32_t* row_seq, const int32_t* row_pos,
                                     const int32_t* tables, int table_width, int block_size, int C,
                                     int NH, float scale) {
  extern __shared__ float scores[];  // [max_len]
  __shared__ float scratch[kWarpSize];
  __shared__ float q[kMaxHeadSize];
  __shared__ float partial[kAttnWarps][kMaxHeadSize];
  const int r = blockIdx.x, h = blockIdx.y, hs = C / NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int pos = row_pos[r];
  const int32_t* table = tables + static_cast<int64_t>(row_seq[r]) * table_width;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) {
    q[i] = __bfloat162float(qkv[static_cast<int64_t>(r) * 3 * C + h * hs + i]);
  }
  __syncthreads();
  auto row = [&](int t, int kv) {
    const int64_t block = table[t / block_size];
    return layer_cache + ((block * 2 + kv) * block_size + t % block_size) * C + h * hs;
  };
  // Scores: a thread per position.
  float local_max = -INFINITY;
  for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
    const bf16* k = row(t, 0);
    float dot = 0;
    if constexpr (kVector) {
      for (int i = 0; i < hs; i += kBf16PerVector) {
        float e[kBf16PerVector];
        LoadBf16(e, k + i);
#pragma unroll
        for (int j = 0; j < kBf16PerVector; ++j) dot += q[i + j] * e[j];
      }
    } else {
      for (int i = 0; i < hs; ++i) dot += q[i] * __bfloat162float(k[i]);
    }
    dot *= scale;
    scores[t] = dot;
    local_max = fmaxf(local_max, dot);
  }
  const float max = BlockMax(local_max, scratch);
  float local_sum = 0;
  for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
    const float e = __expf(scores[t] - max);
    scores[t] = e;
    local_sum += e;
  }
  const float inv = 1.0f / BlockSum(local_sum, scratch);
  __syncthreads();
  // Weighted values: warps over positions, lanes over the head's dimensions
  // (a value row is one coalesced read), then a sum over the warps.
  constexpr int kPerLane = kMaxHeadSize / kWarpSize;
  float acc[kPerLane] = {};
  for (int t = warp; t <= pos; t += kAttnWarps) {
    const bf16* v = row(t, 1);
    const float w = scores[t];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + kWarpSize * j;
      if (d < hs) acc[j] += w * __bfloat162float(v[d]);
    }
  }
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + kWarpSize * j;
    if (d < hs) partial[warp][d] = acc[j];
  }
  __syncthreads();
  bf16* y = out + static_cast<int64_t>(r) * C + h * hs;
  for (int d = threadIdx.x; d < hs; d += blockDim.x) {
    float sum = 0;
    for (int w = 0; w < kAttnWarps; ++w) sum += partial[w][d];
    y[d] = __float2bfloat16_rn(sum * inv);
  }
}

}  // namespace

Status AppendKv(bf16* layer_cache, const bf16* qkv, const int32_t* slot, int N, int block_size,
                int C, cudaStream_t stream) {
  if (N <= 0 || block_size <= 0 || C <= 0) {
    return ShapeError("AppendKv", "N, block_size and C must be positive");
  }
  AppendKvKernel<<<static_cast<unsigned>(N), RowThreads(C), 0, stream>>>(layer_cache, qkv, slot,
                                                                         block_size, C);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status PagedAttentionSupports(int head_size, int max_len) {
  if (head_size <= 0 || head_size > kMaxHeadSize) {
    return ShapeError("PagedAttentionForward", "head sizes 1 to " + std::to_string(kMaxHeadSize) +
                                                   " are supported, not " +
                                                   std::to_string(head_size));
  }
  if (max_len <= 0 || static_cast<int64_t>(max_len) * sizeof(float) > kMaxScoreBytes) {
    return ShapeError("PagedAttentionForward",
                      "a row's scores live in " + std::to_string(kMaxScoreBytes / 1024) +
                          " KiB of shared memory: context length " + std::to_string(max_len) +
                          " is outside 1.." +
                          std::to_string(kMaxScoreBytes / static_cast<int>(sizeof(float))));
  }
  return Status::Ok();
}

Status PagedAttentionForward(bf16* out, const bf16* qkv, const bf16* layer_cache,
                             const int32_t* row_seq, const int32_t* row_pos, const int32_t* tables,
                             int table_width, int N, int block_size, int C, int NH, int max_len,
                             cudaStream_t stream) {
  constexpr const char* kOp = "PagedAttentionForward";
  if (N <= 0 || block_size <= 0 || C <= 0 || NH <= 0 || table_width <= 0) {
    return ShapeError(kOp, "N, block_size, C, NH and table_width must be positive");
  }
  if (C % NH != 0) return ShapeError(kOp, "C must be a multiple of NH");
  const int hs = C / NH;
  KILN_RETURN_IF_ERROR(PagedAttentionSupports(hs, max_len));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(NH));
  const std::size_t shared = static_cast<std::size_t>(max_len) * sizeof(float);
  if (hs % kBf16PerVector == 0 && Aligned16(layer_cache)) {
    PagedAttentionKernel<true><<<grid, kAttnThreads, shared, stream>>>(
        out, qkv, layer_cache, row_seq, row_pos, tables, table_width, block_size, C, NH, scale);
  } else {
    PagedAttentionKernel<false><<<grid, kAttnThreads, shared, stream>>>(
        out, qkv, layer_cache, row_seq, row_pos, tables, table_width, block_size, C, NH, scale);
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
