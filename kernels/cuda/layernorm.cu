// kernels/cuda/layernorm.h: one warp per row for the forward and the input
// gradient; the parameter gradients as deterministic column sums
// (kernels/cuda/chunk_sums.h). For the widths models use (C a multiple of
// 256, up to 1024, 16-byte aligned rows) the backward is one pass: a block
// owns one chunk of rows, each lane keeps its columns' dout and normalised
// input in registers for the input gradient and adds them into per-lane
// parameter sums, which the block combines in a fixed order into the chunk's
// partials. Other widths read dout and inp twice (input gradient, then the
// parameter partials).
#include "kernels/cuda/chunk_sums.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarpsPerBlock * kWarpSize;
constexpr float kEps = 1e-5f;

// One warp per row; lane l handles the kVec-wide chunks l, l + 32, ... of
// the row (C % kVec == 0). With kResidual, a + b is stored to `residual` first
// and normalised from there (each lane rereads only what it wrote).
template <int kVec, bool kResidual>
__global__ void LayerNormForwardKernel(bf16* residual, bf16* out, float* mean, float* rstd,
                                       const bf16* a, const bf16* b, const bf16* weight,
                                       const bf16* bias, int N, int C) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= N) return;
  const int64_t offset = static_cast<int64_t>(row) * C;
  const bf16* x = a + offset;
  if constexpr (kResidual) {
    bf16* r = residual + offset;
    for (int c = lane * kVec; c < C; c += kWarpSize * kVec) {
      float va[kVec], vb[kVec];
      LoadBf16(va, a + offset + c);
      LoadBf16(vb, b + offset + c);
#pragma unroll
      for (int k = 0; k < kVec; ++k) va[k] += vb[k];
      StoreBf16(r + c, va);
    }
    x = r;
  }
  float sum = 0.0f;
  for (int c = lane * kVec; c < C; c += kWarpSize * kVec) {
    float v[kVec];
    LoadBf16(v, x + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum += v[k];
  }
  const float m = WarpSum(sum) / static_cast<float>(C);
  float var = 0.0f;
  for (int c = lane * kVec; c < C; c += kWarpSize * kVec) {
    float v[kVec];
    LoadBf16(v, x + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) var += (v[k] - m) * (v[k] - m);
  }
  const float s = 1.0f / sqrtf(WarpSum(var) / static_cast<float>(C) + kEps);
  for (int c = lane * kVec; c < C; c += kWarpSize * kVec) {
    float v[kVec], w[kVec], bi[kVec];
    LoadBf16(v, x + c);
    LoadBf16(w, weight + c);
    LoadBf16(bi, bias + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = (v[k] - m) * s * w[k] + bi[k];
    StoreBf16(out + offset + c, v);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// dinp of one row per warp, chunked like the forward.
template <int kVec>
__global__ void LayerNormInputGradKernel(bf16* dinp, const bf16* dout, const bf16* inp,
                                         const bf16* weight, const float* mean, const float* rstd,
                                         int N, int C) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= N) return;
  const int64_t offset = static_cast<int64_t>(row) * C;
  const float m = mean[row], s = rstd[row];
  float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
  for (int c = lane * kVec; c < C; c += kWarpSize * kVec) {
    float d[kVec], x[kVec], w[kVec];
    LoadBf16(d, dout + offset + c);
    LoadBf16(x, inp + offset + c);
    LoadBf16(w, weight + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float dnorm = w[k] * d[k];
      dnorm_sum += dnorm;
      dnorm_norm_sum += dnorm * ((x[k] - m) * s);
    }
  }
  const float dnorm_mean = WarpSum(dnorm_sum) / static_cast<float>(C);
  const float dnorm_norm_mean = WarpSum(dnorm_norm_sum) / static_cast<float>(C);
  for (int c = lane * kVec; c < C; c += kWarpSize * kVec) {
    float d[kVec], x[kVec], w[kVec], dx[kVec];
    LoadBf16(d, dout + offset + c);
    LoadBf16(x, inp + offset + c);
    LoadBf16(w, weight + c);
    LoadBf16(dx, dinp + offset + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float norm = (x[k] - m) * s;
      dx[k] += (w[k] * d[k] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
    StoreBf16(dinp + offset + c, dx);
  }
}

// The one-pass backward for C == kPasses * 256: block b owns rows [b *
// kRowsPerChunk, ...), warp w the rows w, w + 8, ... of them; lane l the 8
// columns at (p * 32 + l) * 8 for each p < kPasses. Writes dinp (+=) and the
// chunk's partials[b][0..C) (dweight) and [C..2C) (dbias), summed over the
// warps in order in `smem` (kWarpsPerBlock * 2 * C floats).
template <int kPasses>
__global__ void __launch_bounds__(kThreads)
    LayerNormBackwardOnePassKernel(bf16* dinp, float* partials, const bf16* dout, const bf16* inp,
                                   const bf16* weight, const float* mean, const float* rstd, int N,
                                   int C) {
  constexpr int kVec = kBf16PerVector;
  extern __shared__ float smem[];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int begin = blockIdx.x * kRowsPerChunk, end = min(N, begin + kRowsPerChunk);
  float w[kPasses][kVec], acc_w[kPasses][kVec] = {}, acc_b[kPasses][kVec] = {};
#pragma unroll
  for (int p = 0; p < kPasses; ++p) LoadBf16(w[p], weight + (p * kWarpSize + lane) * kVec);
  for (int row = begin + warp; row < end; row += kWarpsPerBlock) {
    const int64_t offset = static_cast<int64_t>(row) * C;
    const float m = mean[row], s = rstd[row];
    float d[kPasses][kVec], norm[kPasses][kVec];
    float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int c = (p * kWarpSize + lane) * kVec;
      LoadBf16(d[p], dout + offset + c);
      LoadBf16(norm[p], inp + offset + c);
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        norm[p][k] = (norm[p][k] - m) * s;
        const float dnorm = w[p][k] * d[p][k];
        dnorm_sum += dnorm;
        dnorm_norm_sum += dnorm * norm[p][k];
        acc_b[p][k] += d[p][k];
        acc_w[p][k] += norm[p][k] * d[p][k];
      }
    }
    const float dnorm_mean = WarpSum(dnorm_sum) / static_cast<float>(C);
    const float dnorm_norm_mean = WarpSum(dnorm_norm_sum) / static_cast<float>(C);
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int c = (p * kWarpSize + lane) * kVec;
      float dx[kVec];
      LoadBf16(dx, dinp + offset + c);
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        dx[k] += (w[p][k] * d[p][k] - dnorm_mean - norm[p][k] * dnorm_norm_mean) * s;
      }
      StoreBf16(dinp + offset + c, dx);
    }
  }
  float* mine = smem + static_cast<int64_t>(warp) * 2 * C;
#pragma unroll
  for (int p = 0; p < kPasses; ++p) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int c = (p * kWarpSize + lane) * kVec + k;
      mine[c] = acc_w[p][k];
      mine[C + c] = acc_b[p][k];
    }
  }
  __syncthreads();
  float* out = partials + static_cast<int64_t>(blockIdx.x) * 2 * C;
  for (int c = threadIdx.x; c < 2 * C; c += kThreads) {
    float sum = 0.0f;
#pragma unroll
    for (int v = 0; v < kWarpsPerBlock; ++v) sum += smem[v * 2 * C + c];
    out[c] = sum;
  }
}

template <int kPasses>
Status LaunchOnePass(bf16* dinp, float* partials, const bf16* dout, const bf16* inp,
                     const bf16* weight, const float* mean, const float* rstd, int N, int C,
                     int chunks, cudaStream_t stream) {
  const std::size_t smem = sizeof(float) * kWarpsPerBlock * 2 * static_cast<std::size_t>(C);
  KILN_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(LayerNormBackwardOnePassKernel<kPasses>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(smem)));
  LayerNormBackwardOnePassKernel<kPasses>
      <<<static_cast<unsigned>(chunks), kThreads, smem, stream>>>(dinp, partials, dout, inp, weight,
                                                                  mean, rstd, N, C);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

// Stage one of the parameter gradients: block (x, y) sums rows
// [y * kRowsPerChunk, ...) of columns [x * blockDim.x, ...), one column per
// thread, into partials[y][0..C) (dweight) and partials[y][C..2C) (dbias).
__global__ void LayerNormParamPartialsKernel(float* partials, const bf16* dout, const bf16* inp,
                                             const float* mean, const float* rstd, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int chunk = blockIdx.y;
  const int begin = chunk * kRowsPerChunk;
  const int end = min(N, begin + kRowsPerChunk);
  float dweight = 0.0f, dbias = 0.0f;
  for (int n = begin; n < end; ++n) {
    const int64_t i = static_cast<int64_t>(n) * C + c;
    const float d = __bfloat162float(dout[i]);
    dbias += d;
    dweight += (__bfloat162float(inp[i]) - mean[n]) * rstd[n] * d;
  }
  float* p = partials + static_cast<int64_t>(chunk) * 2 * C;
  p[c] = dweight;
  p[C + c] = dbias;
}

Status CheckShape(const char* op, int N, int C) {
  if (N <= 0 || C <= 0) return ShapeError(op, "N and C must be positive");
  return Status::Ok();
}

unsigned RowBlocks(int N) { return static_cast<unsigned>(CeilDiv(N, kWarpsPerBlock)); }

template <bool kResidual>
Status LaunchForward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* a,
                     const bf16* b, const bf16* weight, const bf16* bias, int N, int C,
                     cudaStream_t stream) {
  bool vector = C % kBf16PerVector == 0 && Aligned16(out) && Aligned16(a) && Aligned16(weight) &&
                Aligned16(bias);
  if (kResidual) vector = vector && Aligned16(residual) && Aligned16(b);
  if (vector) {
    LayerNormForwardKernel<kBf16PerVector, kResidual><<<RowBlocks(N), kThreads, 0, stream>>>(
        residual, out, mean, rstd, a, b, weight, bias, N, C);
  } else {
    LayerNormForwardKernel<1, kResidual><<<RowBlocks(N), kThreads, 0, stream>>>(
        residual, out, mean, rstd, a, b, weight, bias, N, C);
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace

Status LayerNormForward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight,
                        const bf16* bias, int N, int C, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("LayerNormForward", N, C));
  return LaunchForward<false>(nullptr, out, mean, rstd, inp, nullptr, weight, bias, N, C, stream);
}

Status ResidualLayerNormForward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* a,
                                const bf16* b, const bf16* weight, const bf16* bias, int N, int C,
                                cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("ResidualLayerNormForward", N, C));
  return LaunchForward<true>(residual, out, mean, rstd, a, b, weight, bias, N, C, stream);
}

std::size_t LayerNormBackwardScratchFloats(int N, int C) {
  return static_cast<std::size_t>(RowChunks(N)) * 2 * static_cast<std::size_t>(C);
}

Status LayerNormBackward(bf16* dinp, float* dweight, float* dbias, const bf16* dout,
                         const bf16* inp, const bf16* weight, const float* mean, const float* rstd,
                         int N, int C, float* scratch, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("LayerNormBackward", N, C));
  if (scratch == nullptr) return ShapeError("LayerNormBackward", "scratch is null");
  const int chunks = RowChunks(N);
  if (chunks > 65535) return ShapeError("LayerNormBackward", "N must be below 65536 * 64");
  const bool vector = C % kBf16PerVector == 0 && Aligned16(dinp) && Aligned16(dout) &&
                      Aligned16(inp) && Aligned16(weight);
  constexpr int kOnePassWidth = kWarpSize * kBf16PerVector;  // 256 columns per pass.
  if (vector && C % kOnePassWidth == 0 && C <= 4 * kOnePassWidth) {
    const int passes = C / kOnePassWidth;
    auto* launch = passes == 1   ? LaunchOnePass<1>
                   : passes == 2 ? LaunchOnePass<2>
                   : passes == 3 ? LaunchOnePass<3>
                                 : LaunchOnePass<4>;
    KILN_RETURN_IF_ERROR(
        launch(dinp, scratch, dout, inp, weight, mean, rstd, N, C, chunks, stream));
    KILN_RETURN_IF_ERROR(
        AddChunkSums(dweight, scratch, chunks, C, 2 * static_cast<int64_t>(C), stream));
    return AddChunkSums(dbias, scratch + C, chunks, C, 2 * static_cast<int64_t>(C), stream);
  }
  if (vector) {
    LayerNormInputGradKernel<kBf16PerVector>
        <<<RowBlocks(N), kThreads, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
  } else {
    LayerNormInputGradKernel<1>
        <<<RowBlocks(N), kThreads, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  constexpr int kColumns = 256;
  const dim3 grid(static_cast<unsigned>(CeilDiv(C, kColumns)), static_cast<unsigned>(chunks));
  LayerNormParamPartialsKernel<<<grid, kColumns, 0, stream>>>(scratch, dout, inp, mean, rstd, N, C);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  KILN_RETURN_IF_ERROR(
      AddChunkSums(dweight, scratch, chunks, C, 2 * static_cast<int64_t>(C), stream));
  return AddChunkSums(dbias, scratch + C, chunks, C, 2 * static_cast<int64_t>(C), stream);
}

}  // namespace kiln::kernels::cuda
