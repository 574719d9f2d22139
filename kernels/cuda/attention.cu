// kernels/cuda/attention.h. cuBLAS is column-major: a row-major [T, hs] head
// matrix is a column-major hs x T one (ld hs) and a row-major [T, T] matrix is
// its own transpose (ld T), so each GEMM below computes the transpose of the
// row-major product named beside it.
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;

// Index arithmetic between the row layout [B, T, 3, NH, hs] of qkv (or [B, T,
// NH, hs] of out) and the head layout [B, NH, T, hs]; idx is a head-layout
// index of one of q, k, v.
struct HeadIndex {
  int64_t row_offset;  // Offset of the element in a [B, T, NH, hs] tensor.
  int64_t b, t;
  __device__ HeadIndex(int64_t idx, int T, int NH, int hs) {
    const int64_t d = idx % hs;
    t = (idx / hs) % T;
    const int64_t h = (idx / (static_cast<int64_t>(hs) * T)) % NH;
    b = idx / (static_cast<int64_t>(hs) * T * NH);
    row_offset = (b * T + t) * NH * hs + h * hs + d;
  }
};

// qkv [B, T, 3C] -> q, k, v [B, NH, T, hs].
__global__ void SplitHeadsKernel(bf16* q, bf16* k, bf16* v, const bf16* qkv, int B, int T, int NH,
                                 int hs) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t C = static_cast<int64_t>(NH) * hs;
  if (idx >= B * T * C) return;
  const HeadIndex at(idx, T, NH, hs);
  // Row (b, t) of qkv starts at (b*T + t) * 3C; row_offset counted it as C.
  const int64_t src = at.row_offset + (at.b * T + at.t) * 2 * C;
  q[idx] = qkv[src];
  k[idx] = qkv[src + C];
  v[idx] = qkv[src + 2 * C];
}

// dqkv [B, T, 3C] += dq, dk, dv [B, NH, T, hs].
__global__ void AccumulateHeadGradsKernel(bf16* dqkv, const bf16* dq, const bf16* dk,
                                          const bf16* dv, int B, int T, int NH, int hs) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t C = static_cast<int64_t>(NH) * hs;
  if (idx >= B * T * C) return;
  const HeadIndex at(idx, T, NH, hs);
  const int64_t dst = at.row_offset + (at.b * T + at.t) * 2 * C;
  dqkv[dst] = __float2bfloat16_rn(__bfloat162float(dqkv[dst]) + __bfloat162float(dq[idx]));
  dqkv[dst + C] = __float2bfloat16_rn(__bfloat162float(dqkv[dst + C]) + __bfloat162float(dk[idx]));
  dqkv[dst + 2 * C] =
      __float2bfloat16_rn(__bfloat162float(dqkv[dst + 2 * C]) + __bfloat162float(dv[idx]));
}

// Between [B, T, C] and [B, NH, T, hs]: heads -> rows when kToRows, else rows
// -> heads.
template <bool kToRows>
__global__ void PermuteHeadsKernel(bf16* out, const bf16* in, int B, int T, int NH, int hs) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<int64_t>(B) * T * NH * hs) return;
  const HeadIndex at(idx, T, NH, hs);
  if (kToRows) {
    out[at.row_offset] = in[idx];
  } else {
    out[idx] = in[at.row_offset];
  }
}

// One warp per score row (b, h, t): att[j] = exp(s[j] - max) / sum for
// j <= t, 0 above the diagonal. Scores are already scaled.
__global__ void CausalSoftmaxKernel(bf16* att, const float* scores, int64_t rows, int T) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  const float* s = scores + row * T;
  bf16* a = att + row * T;
  float maxv = -INFINITY;
  for (int j = lane; j <= t; j += kWarpSize) maxv = fmaxf(maxv, s[j]);
  maxv = WarpMax(maxv);  // Finite: lane 0 saw s[0].
  float sum = 0.0f;
  for (int j = lane; j <= t; j += kWarpSize) sum += expf(s[j] - maxv);
  const float inv = 1.0f / WarpSum(sum);
  for (int j = lane; j < T; j += kWarpSize) {
    a[j] = __float2bfloat16_rn(j <= t ? expf(s[j] - maxv) * inv : 0.0f);
  }
}

// One warp per row: dscores[j] = att[j] * (datt[j] - sum_i att[i] datt[i])
// for j <= t, 0 above the diagonal.
__global__ void CausalSoftmaxBackwardKernel(bf16* dscores, const bf16* att, const float* datt,
                                            int64_t rows, int T) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  const bf16* a = att + row * T;
  const float* da = datt + row * T;
  float dot = 0.0f;
  for (int j = lane; j <= t; j += kWarpSize) dot += __bfloat162float(a[j]) * da[j];
  dot = WarpSum(dot);
  bf16* ds = dscores + row * T;
  for (int j = lane; j < T; j += kWarpSize) {
    ds[j] = __float2bfloat16_rn(j <= t ? __bfloat162float(a[j]) * (da[j] - dot) : 0.0f);
  }
}

constexpr std::size_t kScratchAlign = 256;

constexpr std::size_t AlignUp(std::size_t n) {
  return (n + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
}

// Where each scratch tensor lives. The forward uses q, k, v, heads (its
// head-major output) and scores; the backward all of them, with heads holding
// dout in head layout and scores the float gradient of att.
struct Scratch {
  bf16 *q, *k, *v, *dq, *dk, *dv, *heads;
  float* scores;
  bf16* dscores;
  std::size_t bytes;

  Scratch(void* base, int B, int T, int C, int NH) {
    const std::size_t btc = static_cast<std::size_t>(B) * T * C;
    const std::size_t tt = static_cast<std::size_t>(B) * NH * T * T;
    char* p = static_cast<char*>(base);
    std::size_t at = 0;
    auto take = [&](std::size_t n) {
      char* region = p == nullptr ? nullptr : p + at;
      at += AlignUp(n);
      return region;
    };
    bf16** heads_tensors[] = {&q, &k, &v, &dq, &dk, &dv, &heads};
    for (bf16** t : heads_tensors) *t = reinterpret_cast<bf16*>(take(btc * sizeof(bf16)));
    scores = reinterpret_cast<float*>(take(tt * sizeof(float)));
    dscores = reinterpret_cast<bf16*>(take(tt * sizeof(bf16)));
    bytes = at;
  }
};

// One strided-batched GEMM over the B*NH heads: C (m x n, ld ldc) = alpha *
// op(A) * op(B), bf16 A and B, float accumulation, C of type c_type.
Status BatchedGemm(const Blas& blas, bool transa, bool transb, int m, int n, int k, float alpha,
                   const bf16* A, int lda, int64_t stride_a, const bf16* B, int ldb,
                   int64_t stride_b, void* C, cudaDataType_t c_type, int ldc, int64_t stride_c,
                   int batch, cudaStream_t stream) {
  const float beta = 0.0f;
  KILN_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas.cublas(), stream));
  KILN_CUBLAS_RETURN_IF_ERROR(cublasGemmStridedBatchedEx(
      blas.cublas(), transa ? CUBLAS_OP_T : CUBLAS_OP_N, transb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
      k, &alpha, A, CUDA_R_16BF, lda, stride_a, B, CUDA_R_16BF, ldb, stride_b, &beta, C, c_type,
      ldc, stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::Ok();
}

Status CheckArgs(const char* op, int B, int T, int C, int NH, void* scratch,
                 std::size_t scratch_bytes) {
  if (B <= 0 || T <= 0 || C <= 0 || NH <= 0) return ShapeError(op, "B, T, C, NH must be positive");
  if (C % NH != 0) return ShapeError(op, "C must be a multiple of NH");
  const std::size_t need = AttentionScratchBytes(B, T, C, NH);
  if (scratch == nullptr || scratch_bytes < need) {
    return ShapeError(op, "scratch holds " + std::to_string(scratch_bytes) + " bytes, needs " +
                              std::to_string(need));
  }
  return Status::Ok();
}

unsigned ElementBlocks(int64_t n) { return static_cast<unsigned>(CeilDiv(n, kThreads)); }

unsigned RowBlocks(int64_t rows) { return static_cast<unsigned>(CeilDiv(rows, kWarpsPerBlock)); }

}  // namespace

std::size_t AttentionScratchBytes(int B, int T, int C, int NH) {
  return Scratch(nullptr, B, T, C, NH).bytes;
}

Status AttentionForward(const Blas& blas, bf16* out, bf16* att, const bf16* qkv, int B, int T,
                        int C, int NH, void* scratch, std::size_t scratch_bytes,
                        cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckArgs("AttentionForward", B, T, C, NH, scratch, scratch_bytes));
  const Scratch s(scratch, B, T, C, NH);
  const int hs = C / NH, batch = B * NH;
  const int64_t btc = static_cast<int64_t>(B) * T * C, head = static_cast<int64_t>(T) * hs;
  const int64_t tt = static_cast<int64_t>(T) * T, rows = static_cast<int64_t>(batch) * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));

  SplitHeadsKernel<<<ElementBlocks(btc), kThreads, 0, stream>>>(s.q, s.k, s.v, qkv, B, T, NH, hs);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // scores [T, T] = scale * q @ k^T, as scores^T = (k^T)^T q^T.
  KILN_RETURN_IF_ERROR(BatchedGemm(blas, true, false, T, T, hs, scale, s.k, hs, head, s.q, hs, head,
                                   s.scores, CUDA_R_32F, T, tt, batch, stream));
  CausalSoftmaxKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(att, s.scores, rows, T);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // heads [T, hs] = att @ v, as heads^T = v^T att^T.
  KILN_RETURN_IF_ERROR(BatchedGemm(blas, false, false, hs, T, T, 1.0f, s.v, hs, head, att, T, tt,
                                   s.heads, CUDA_R_16BF, hs, head, batch, stream));
  PermuteHeadsKernel<true><<<ElementBlocks(btc), kThreads, 0, stream>>>(out, s.heads, B, T, NH, hs);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status AttentionBackward(const Blas& blas, bf16* dqkv, const bf16* dout, const bf16* qkv,
                         const bf16* att, int B, int T, int C, int NH, void* scratch,
                         std::size_t scratch_bytes, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckArgs("AttentionBackward", B, T, C, NH, scratch, scratch_bytes));
  const Scratch s(scratch, B, T, C, NH);
  const int hs = C / NH, batch = B * NH;
  const int64_t btc = static_cast<int64_t>(B) * T * C, head = static_cast<int64_t>(T) * hs;
  const int64_t tt = static_cast<int64_t>(T) * T, rows = static_cast<int64_t>(batch) * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  float* datt = s.scores;

  SplitHeadsKernel<<<ElementBlocks(btc), kThreads, 0, stream>>>(s.q, s.k, s.v, qkv, B, T, NH, hs);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  PermuteHeadsKernel<false>
      <<<ElementBlocks(btc), kThreads, 0, stream>>>(s.heads, dout, B, T, NH, hs);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // datt [T, T] = dheads @ v^T, as datt^T = (v^T)^T dheads^T.
  KILN_RETURN_IF_ERROR(BatchedGemm(blas, true, false, T, T, hs, 1.0f, s.v, hs, head, s.heads, hs,
                                   head, datt, CUDA_R_32F, T, tt, batch, stream));
  // dv [T, hs] = att^T @ dheads, as dv^T = dheads^T att (att^T stored, so transposed).
  KILN_RETURN_IF_ERROR(BatchedGemm(blas, false, true, hs, T, T, 1.0f, s.heads, hs, head, att, T, tt,
                                   s.dv, CUDA_R_16BF, hs, head, batch, stream));
  CausalSoftmaxBackwardKernel<<<RowBlocks(rows), kThreads, 0, stream>>>(s.dscores, att, datt, rows,
                                                                        T);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // dq [T, hs] = scale * dscores @ k, as dq^T = k^T dscores^T.
  KILN_RETURN_IF_ERROR(BatchedGemm(blas, false, false, hs, T, T, scale, s.k, hs, head, s.dscores, T,
                                   tt, s.dq, CUDA_R_16BF, hs, head, batch, stream));
  // dk [T, hs] = scale * dscores^T @ q, as dk^T = q^T dscores.
  KILN_RETURN_IF_ERROR(BatchedGemm(blas, false, true, hs, T, T, scale, s.q, hs, head, s.dscores, T,
                                   tt, s.dk, CUDA_R_16BF, hs, head, batch, stream));
  AccumulateHeadGradsKernel<<<ElementBlocks(btc), kThreads, 0, stream>>>(dqkv, s.dq, s.dk, s.dv, B,
                                                                         T, NH, hs);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
