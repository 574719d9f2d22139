// kernels/cuda/paged_attention.h: the append is one block per row.
// Attention, general path: one block per (row, head) with the scores in
// shared memory, the softmax by block reductions, and the weighted values
// summed by warps over positions with lanes over the head's dimensions.
// Attention, split path (head sizes 8, 16, 32, 64, 128 on an aligned cache):
// a block per (row, head, split) of the positions, so a few rows still fill
// the GPU (flash-decoding); within a warp, hs/8 lanes share a position and
// each reads 16 bytes of its key and value rows, so a warp reads whole rows;
// each split writes its unnormalised output, max and sum, and a second
// kernel combines the splits. One split needs no combine and no workspace.
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

// Positions of one split per block: at least this many, so a split's work
// outweighs its share of the combine.
constexpr int kMinSplitLen = 64;

// kLanes lanes (hs / 8) per position, 32 / kLanes positions per warp step.
template <int kLanes>
__global__ void SplitAttentionKernel(bf16* out, float* partials, const bf16* qkv,
                                     const bf16* layer_cache, const int32_t* row_seq,
                                     const int32_t* row_pos, const int32_t* tables, int table_width,
                                     int block_size, int C, int NH, int split_len, float scale) {
  constexpr int kGroups = kWarpSize / kLanes;  // Positions a warp handles at once.
  constexpr int kHs = kLanes * kBf16PerVector;
  extern __shared__ float scores[];  // [split_len]
  __shared__ float scratch[kWarpSize];
  __shared__ float partial[kAttnWarps][kHs];
  const int r = blockIdx.x, h = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int group = lane / kLanes, slice = lane % kLanes;  // Position in the step, 8 dims.
  const int pos = row_pos[r];
  const int begin = split * split_len, end = min(begin + split_len, pos + 1);
  // Where this split's results go: [hs] output, then max and sum.
  float* mine = splits > 1
                    ? partials + ((static_cast<int64_t>(r) * NH + h) * splits + split) * (kHs + 2)
                    : nullptr;
  if (begin >= end) {  // Past the row's position: an empty split.
    if (splits > 1 && threadIdx.x == 0) {
      mine[kHs] = -INFINITY;
      mine[kHs + 1] = 0;
    }
    return;
  }
  const int32_t* table = tables + static_cast<int64_t>(row_seq[r]) * table_width;
  auto row = [&](int t, int kv) {
    const int64_t block = table[t / block_size];
    return layer_cache + ((block * 2 + kv) * block_size + t % block_size) * C + h * kHs +
           slice * kBf16PerVector;
  };
  float q[kBf16PerVector];
  LoadBf16(q, qkv + static_cast<int64_t>(r) * 3 * C + h * kHs + slice * kBf16PerVector);
  // Scores: a lane group per position, reduced over its lanes.
  float local_max = -INFINITY;
  for (int t0 = begin + warp * kGroups; t0 < end; t0 += kAttnWarps * kGroups) {
    const int t = t0 + group;
    float dot = 0;
    if (t < end) {
      float k[kBf16PerVector];
      LoadBf16(k, row(t, 0));
#pragma unroll
      for (int j = 0; j < kBf16PerVector; ++j) dot += q[j] * k[j];
    }
#pragma unroll
    for (int o = kLanes / 2; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (t < end) {
      dot *= scale;
      if (slice == 0) scores[t - begin] = dot;
      local_max = fmaxf(local_max, dot);
    }
  }
  const float max = BlockMax(local_max, scratch);
  float local_sum = 0;
  for (int i = threadIdx.x; i < end - begin; i += blockDim.x) {
    const float e = __expf(scores[i] - max);
    scores[i] = e;
    local_sum += e;
  }
  const float sum = BlockSum(local_sum, scratch);
  __syncthreads();
  // Weighted values: the same lane groups; then over the groups of a warp,
  // then over the warps.
  float acc[kBf16PerVector] = {};
  for (int t0 = begin + warp * kGroups; t0 < end; t0 += kAttnWarps * kGroups) {
    const int t = t0 + group;
    if (t < end) {
      const float w = scores[t - begin];
      float v[kBf16PerVector];
      LoadBf16(v, row(t, 1));
#pragma unroll
      for (int j = 0; j < kBf16PerVector; ++j) acc[j] += w * v[j];
    }
  }
#pragma unroll
  for (int j = 0; j < kBf16PerVector; ++j) {
#pragma unroll
    for (int o = kLanes; o < kWarpSize; o *= 2) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], o);
  }
  if (group == 0) {
#pragma unroll
    for (int j = 0; j < kBf16PerVector; ++j) partial[warp][slice * kBf16PerVector + j] = acc[j];
  }
  __syncthreads();
  // A row within the first split has no other: its output is final here
  // (and the combine leaves it alone).
  const bool alone = splits == 1 || pos < split_len;
  for (int d = threadIdx.x; d < kHs; d += blockDim.x) {
    float o = 0;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) o += partial[w][d];
    if (alone) {
      out[static_cast<int64_t>(r) * C + h * kHs + d] = __float2bfloat16_rn(o / sum);
    } else {
      mine[d] = o;
    }
  }
  if (!alone && threadIdx.x == 0) {
    mine[kHs] = max;
    mine[kHs + 1] = sum;
  }
}

// out = the splits' outputs rescaled to one max, over their rescaled sums.
__global__ void CombineSplitsKernel(bf16* out, const float* partials, const int32_t* row_pos, int C,
                                    int NH, int hs, int splits, int split_len) {
  const int r = blockIdx.x, h = blockIdx.y;
  if (row_pos[r] < split_len) return;  // One split: written by the split kernel.
  const float* p = partials + (static_cast<int64_t>(r) * NH + h) * splits * (hs + 2);
  float max = -INFINITY;
  for (int s = 0; s < splits; ++s) max = fmaxf(max, p[s * (hs + 2) + hs]);
  float sum = 0;
  for (int s = 0; s < splits; ++s) {
    const float m = p[s * (hs + 2) + hs];
    if (m != -INFINITY) sum += p[s * (hs + 2) + hs + 1] * __expf(m - max);
  }
  const float inv = 1.0f / sum;
  for (int d = threadIdx.x; d < hs; d += blockDim.x) {
    float o = 0;
    for (int s = 0; s < splits; ++s) {
      const float m = p[s * (hs + 2) + hs];
      if (m != -INFINITY) o += p[s * (hs + 2) + d] * __expf(m - max);
    }
    out[static_cast<int64_t>(r) * C + h * hs + d] = __float2bfloat16_rn(o * inv);
  }
}

// Lanes per position for the split path, or 0 when it does not apply.
int SplitLanes(int hs) {
  switch (hs) {
    case 8:
      return 1;
    case 16:
      return 2;
    case 32:
      return 4;
    case 64:
      return 8;
    case 128:
      return 16;
    default:
      return 0;
  }
}

int MultiprocessorCount() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return 1;
  }
  return std::max(1, sms);
}

// Splits per (row, head): enough blocks for about two per SM, none shorter
// than kMinSplitLen positions.
int SplitCount(int N, int NH, int max_len, int sms) {
  const int64_t units = static_cast<int64_t>(N) * NH;
  const int64_t want = (2 * static_cast<int64_t>(sms) + units - 1) / units;
  const int64_t most = (max_len + kMinSplitLen - 1) / kMinSplitLen;
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::max<int64_t>(1, most)));
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

int64_t PagedAttentionWorkspaceFloats(int max_rows, int C, int NH, int max_len) {
  if (max_rows <= 0 || NH <= 0 || C % NH != 0 || SplitLanes(C / NH) == 0) return 0;
  const int sms = MultiprocessorCount();
  int64_t most = 0;
  for (int n = 1; n <= max_rows; ++n) {
    const int splits = SplitCount(n, NH, max_len, sms);
    if (splits > 1) most = std::max<int64_t>(most, static_cast<int64_t>(n) * NH * splits);
  }
  return most * (C / NH + 2);
}

Status PagedAttentionForward(bf16* out, const bf16* qkv, const bf16* layer_cache,
                             const int32_t* row_seq, const int32_t* row_pos, const int32_t* tables,
                             int table_width, int N, int block_size, int C, int NH, int max_len,
                             cudaStream_t stream, float* workspace, int64_t workspace_floats) {
  constexpr const char* kOp = "PagedAttentionForward";
  if (N <= 0 || block_size <= 0 || C <= 0 || NH <= 0 || table_width <= 0) {
    return ShapeError(kOp, "N, block_size, C, NH and table_width must be positive");
  }
  if (C % NH != 0) return ShapeError(kOp, "C must be a multiple of NH");
  const int hs = C / NH;
  KILN_RETURN_IF_ERROR(PagedAttentionSupports(hs, max_len));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int lanes = SplitLanes(hs);
  if (lanes > 0 && Aligned16(layer_cache) && Aligned16(qkv)) {
    int splits = SplitCount(N, NH, max_len, MultiprocessorCount());
    const int64_t need = static_cast<int64_t>(N) * NH * splits * (hs + 2);
    if (workspace == nullptr || workspace_floats < need) splits = 1;  // No room: one pass.
    const int split_len = (max_len + splits - 1) / splits;
    const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(NH),
                    static_cast<unsigned>(splits));
    const std::size_t shared = static_cast<std::size_t>(split_len) * sizeof(float);
    auto launch = [&](auto kernel) {
      kernel<<<grid, kAttnThreads, shared, stream>>>(out, workspace, qkv, layer_cache, row_seq,
                                                     row_pos, tables, table_width, block_size, C,
                                                     NH, split_len, scale);
    };
    switch (lanes) {
      case 1:
        launch(SplitAttentionKernel<1>);
        break;
      case 2:
        launch(SplitAttentionKernel<2>);
        break;
      case 4:
        launch(SplitAttentionKernel<4>);
        break;
      case 8:
        launch(SplitAttentionKernel<8>);
        break;
      default:
        launch(SplitAttentionKernel<16>);
        break;
    }
    KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    if (splits > 1) {
      CombineSplitsKernel<<<dim3(static_cast<unsigned>(N), static_cast<unsigned>(NH)),
                            static_cast<unsigned>(std::min(hs, 128)), 0, stream>>>(
          out, workspace, row_pos, C, NH, hs, splits, split_len);
      KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    }
    return Status::Ok();
  }
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
