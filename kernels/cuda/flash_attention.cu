// kernels/cuda/flash_attention.h. Every kernel works on one (batch, head) and
// one 64-row tile of queries or keys, with 4 warps of 16 rows each. Tiles are
// copied from qkv's row layout [B, T, 3, NH, 64] into shared memory (rows past
// T zero), products run on tensor cores through WMMA 16x16x16 fragments, and
// each warp does its rows' elementwise work on float scratch in shared memory.
// Scores are kept in log2 units: s2 = (q . k) * scale * log2(e), so the
// softmax uses exp2 and lse = log2 sum 2^s2.
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kHs = 64;    // Head size.
constexpr int kTile = 64;  // Query or key rows per block.
constexpr int kWarps = 4;  // Each owns 16 rows of the block's tile.
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kLd = kHs + 8;     // bf16 tile row stride (shared memory).
constexpr int kLdf = kTile + 4;  // float scratch row stride.
constexpr int kFrag = 16;        // WMMA fragment side.
constexpr float kLog2e = 1.4426950408889634f;

using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, bf16, wmma::col_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, bf16, wmma::row_major>;
using FragAcc = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

constexpr std::size_t kTileBytes = sizeof(bf16) * kTile * kLd;
constexpr std::size_t kWarpFloatBytes = sizeof(float) * kFrag * kLdf;
constexpr std::size_t kWarpBf16Bytes = sizeof(bf16) * kFrag * kLd;

// 64 rows x 64 columns from `src` (row t at src + t * row_stride) starting at
// row t0, into dst [64][kLd]; rows at or past T are zero. 16-byte copies.
__device__ __forceinline__ void LoadTile(bf16* dst, const bf16* src, int64_t row_stride, int t0,
                                         int T) {
  constexpr int kVecs = kHs / 8;
  for (int i = threadIdx.x; i < kTile * kVecs; i += kThreads) {
    const int r = i / kVecs, v = i % kVecs, t = t0 + r;
    uint4 x = make_uint4(0, 0, 0, 0);
    if (t < T) x = *reinterpret_cast<const uint4*>(src + t * row_stride + v * 8);
    *reinterpret_cast<uint4*>(dst + r * kLd + v * 8) = x;
  }
}

// acc[n] (16 x 16 column block n of a 16 x 64 result) = A (16 x 64, row-major
// at a, ld kLd) x B, where B's k-th 16-row block, n-th 16-column block is at
// b_at(k, n); FragB says how B is stored.
template <class FragB, class BAt>
__device__ __forceinline__ void Product16x64(FragAcc (&acc)[4], const bf16* a, BAt b_at) {
#pragma unroll
  for (int n = 0; n < 4; ++n) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    FragA fa;
    wmma::load_matrix_sync(fa, a + k * kFrag, kLd);
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      FragB fb;
      wmma::load_matrix_sync(fb, b_at(k, n), kLd);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// As Product16x64, adding into acc.
template <class FragB, class BAt>
__device__ __forceinline__ void Accumulate16x64(FragAcc (&acc)[4], const bf16* a, BAt b_at) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    FragA fa;
    wmma::load_matrix_sync(fa, a + k * kFrag, kLd);
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      FragB fb;
      wmma::load_matrix_sync(fb, b_at(k, n), kLd);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

__device__ __forceinline__ void Store16x64(float* dst, const FragAcc (&acc)[4]) {
#pragma unroll
  for (int n = 0; n < 4; ++n)
    wmma::store_matrix_sync(dst + n * kFrag, acc[n], kLdf, wmma::mem_row_major);
}

// Grid (query tiles, B * NH). out [B, T, C], lse [B * NH, T].
__global__ void __launch_bounds__(kThreads)
    FlashForwardKernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH,
                       float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = Qs + kTile * kLd;
  bf16* Vs = Ks + kTile * kLd;
  float* Sf = reinterpret_cast<float*>(Vs + kTile * kLd);
  bf16* Ps = reinterpret_cast<bf16*>(Sf + kWarps * kFrag * kLdf);
  float* Of = reinterpret_cast<float*>(Ps + kWarps * kFrag * kLd);
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  float* S = Sf + warp * kFrag * kLdf;
  bf16* P = Ps + warp * kFrag * kLd;
  float* O = Of + warp * kFrag * kHs;
  const bf16* Qw = Qs + warp * kFrag * kLd;
  const int q0 = qt * kTile + warp * kFrag;  // This warp's first query row.

  LoadTile(Qs, base, rs, qt * kTile, T);
  for (int i = lane; i < kFrag * kHs; i += kWarpSize) O[i] = 0.0f;
  float m[kFrag], l[kFrag];
#pragma unroll
  for (int r = 0; r < kFrag; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  FragAcc acc[4];
  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();  // Every warp is done with the previous K and V.
    LoadTile(Ks, base + C, rs, kt * kTile, T);
    LoadTile(Vs, base + 2 * C, rs, kt * kTile, T);
    __syncthreads();
    // S = Q K^T for this warp's 16 queries and the tile's 64 keys.
    Product16x64<FragBCol>(acc, Qw, [&](int k, int n) { return Ks + n * kFrag * kLd + k * kFrag; });
    Store16x64(S, acc);
    __syncwarp();
    // Online softmax, row by row; lane covers columns lane and lane + 32.
#pragma unroll
    for (int r = 0; r < kFrag; ++r) {
      const int q = q0 + r;
      float s[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int c = lane + j * kWarpSize, key = kt * kTile + c;
        s[j] = key <= q && key < T ? S[r * kLdf + c] * scale_log2 : -INFINITY;
      }
      // Finite: key kt * 64 <= q for every row of a tile kt <= qt, and < T.
      const float m_new = fmaxf(m[r], WarpMax(fmaxf(s[0], s[1])));
      const float alpha = exp2f(m[r] - m_new);
      const float p0 = exp2f(s[0] - m_new), p1 = exp2f(s[1] - m_new);
      l[r] = l[r] * alpha + WarpSum(p0 + p1);
      m[r] = m_new;
      P[r * kLd + lane] = __float2bfloat16_rn(p0);
      P[r * kLd + lane + kWarpSize] = __float2bfloat16_rn(p1);
      O[r * kHs + lane] *= alpha;
      O[r * kHs + lane + kWarpSize] *= alpha;
    }
    __syncwarp();
    // O += P V.
    Product16x64<FragBRow>(acc, P, [&](int k, int n) { return Vs + k * kFrag * kLd + n * kFrag; });
    Store16x64(S, acc);
    __syncwarp();
    for (int i = lane; i < kFrag * kHs; i += kWarpSize) {
      O[i] += S[(i / kHs) * kLdf + i % kHs];
    }
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < kFrag; ++r) {
    const int q = q0 + r;
    if (q >= T) continue;
    const float inv = 1.0f / l[r];
    bf16* o = out + (static_cast<int64_t>(b) * T + q) * C + h * kHs;
    o[lane] = __float2bfloat16_rn(O[r * kHs + lane] * inv);
    o[lane + kWarpSize] = __float2bfloat16_rn(O[r * kHs + lane + kWarpSize] * inv);
    if (lane == 0) lse[static_cast<int64_t>(bh) * T + q] = m[r] + log2f(l[r]);
  }
}

// D[bh, t] = sum_d dout[b, t, h, d] * out[b, t, h, d]; one warp per row.
__global__ void RowDotKernel(float* D, const bf16* dout, const bf16* out, int B, int T, int C,
                             int NH) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= static_cast<int64_t>(B) * NH * T) return;
  const int64_t bh = row / T;
  const int t = static_cast<int>(row % T), b = static_cast<int>(bh / NH),
            h = static_cast<int>(bh % NH);
  const int64_t at = (static_cast<int64_t>(b) * T + t) * C + h * kHs;
  float sum = 0.0f;
  for (int d = lane; d < kHs; d += kWarpSize) {
    sum += __bfloat162float(dout[at + d]) * __bfloat162float(out[at + d]);
  }
  sum = WarpSum(sum);
  if (lane == 0) D[row] = sum;
}

// Grid (key tiles, B * NH): dK and dV of the tile's 64 keys, over the query
// tiles at or after it.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardKvKernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                          const float* D, int T, int C, int NH, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = Ks + kTile * kLd;
  bf16* Qs = Vs + kTile * kLd;
  bf16* dOs = Qs + kTile * kLd;
  float* Sf = reinterpret_cast<float*>(dOs + kTile * kLd);
  float* dPf = Sf + kWarps * kFrag * kLdf;
  bf16* Pts = reinterpret_cast<bf16*>(dPf + kWarps * kFrag * kLdf);
  bf16* dSts = Pts + kWarps * kFrag * kLd;
  float* lse_s = reinterpret_cast<float*>(dSts + kWarps * kFrag * kLd);
  float* D_s = lse_s + kTile;
  const int kt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const bf16* dbase = dout + static_cast<int64_t>(b) * T * C + h * kHs;
  float* S = Sf + warp * kFrag * kLdf;
  float* dP = dPf + warp * kFrag * kLdf;
  bf16* Pt = Pts + warp * kFrag * kLd;
  bf16* dSt = dSts + warp * kFrag * kLd;
  const bf16* Kw = Ks + warp * kFrag * kLd;
  const bf16* Vw = Vs + warp * kFrag * kLd;
  const int k0 = kt * kTile + warp * kFrag;  // This warp's first key.
  const int tiles = (T + kTile - 1) / kTile;

  LoadTile(Ks, base + C, rs, kt * kTile, T);
  LoadTile(Vs, base + 2 * C, rs, kt * kTile, T);
  FragAcc dK[4], dV[4], acc[4];
#pragma unroll
  for (int n = 0; n < 4; ++n) {
    wmma::fill_fragment(dK[n], 0.0f);
    wmma::fill_fragment(dV[n], 0.0f);
  }
  for (int qt = kt; qt < tiles; ++qt) {
    __syncthreads();
    LoadTile(Qs, base, rs, qt * kTile, T);
    LoadTile(dOs, dbase, C, qt * kTile, T);
    for (int i = threadIdx.x; i < kTile; i += kThreads) {
      const int t = qt * kTile + i;
      lse_s[i] = t < T ? lse[static_cast<int64_t>(bh) * T + t] : 0.0f;
      D_s[i] = t < T ? D[static_cast<int64_t>(bh) * T + t] : 0.0f;
    }
    __syncthreads();
    // S^T = K Q^T: this warp's 16 keys by the tile's 64 queries.
    Product16x64<FragBCol>(acc, Kw, [&](int k, int n) { return Qs + n * kFrag * kLd + k * kFrag; });
    Store16x64(S, acc);
    // dP^T = V dO^T.
    Product16x64<FragBCol>(acc, Vw,
                           [&](int k, int n) { return dOs + n * kFrag * kLd + k * kFrag; });
    Store16x64(dP, acc);
    __syncwarp();
    for (int i = lane; i < kFrag * kTile; i += kWarpSize) {
      const int r = i / kTile, c = i % kTile, key = k0 + r, q = qt * kTile + c;
      const float p =
          key <= q && q < T && key < T ? exp2f(S[r * kLdf + c] * scale_log2 - lse_s[c]) : 0.0f;
      Pt[r * kLd + c] = __float2bfloat16_rn(p);
      dSt[r * kLd + c] = __float2bfloat16_rn(p * (dP[r * kLdf + c] - D_s[c]));
    }
    __syncwarp();
    // dV += P^T dO; dK += dS^T Q (scaled at the end).
    Accumulate16x64<FragBRow>(dV, Pt,
                              [&](int k, int n) { return dOs + k * kFrag * kLd + n * kFrag; });
    Accumulate16x64<FragBRow>(dK, dSt,
                              [&](int k, int n) { return Qs + k * kFrag * kLd + n * kFrag; });
  }
  __syncwarp();
  Store16x64(S, dK);
  Store16x64(dP, dV);
  __syncwarp();
  for (int i = lane; i < kFrag * kHs; i += kWarpSize) {
    const int r = i / kHs, c = i % kHs, key = k0 + r;
    if (key >= T) continue;
    bf16* row = dqkv + (static_cast<int64_t>(b) * T + key) * rs + h * kHs + c;
    row[C] = __float2bfloat16_rn(__bfloat162float(row[C]) + S[r * kLdf + c] * scale);
    row[2 * C] = __float2bfloat16_rn(__bfloat162float(row[2 * C]) + dP[r * kLdf + c]);
  }
}

// Grid (query tiles, B * NH): dQ of the tile's 64 queries, over the key
// tiles at or before it.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardQKernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                         const float* D, int T, int C, int NH, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* dOs = Qs + kTile * kLd;
  bf16* Ks = dOs + kTile * kLd;
  bf16* Vs = Ks + kTile * kLd;
  float* Sf = reinterpret_cast<float*>(Vs + kTile * kLd);
  float* dPf = Sf + kWarps * kFrag * kLdf;
  bf16* dSs = reinterpret_cast<bf16*>(dPf + kWarps * kFrag * kLdf);
  float* lse_s = reinterpret_cast<float*>(dSs + kWarps * kFrag * kLd);
  float* D_s = lse_s + kTile;
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const bf16* dbase = dout + static_cast<int64_t>(b) * T * C + h * kHs;
  float* S = Sf + warp * kFrag * kLdf;
  float* dP = dPf + warp * kFrag * kLdf;
  bf16* dS = dSs + warp * kFrag * kLd;
  const bf16* Qw = Qs + warp * kFrag * kLd;
  const bf16* dOw = dOs + warp * kFrag * kLd;
  const int q0 = qt * kTile + warp * kFrag;

  LoadTile(Qs, base, rs, qt * kTile, T);
  LoadTile(dOs, dbase, C, qt * kTile, T);
  for (int i = threadIdx.x; i < kTile; i += kThreads) {
    const int t = qt * kTile + i;
    lse_s[i] = t < T ? lse[static_cast<int64_t>(bh) * T + t] : 0.0f;
    D_s[i] = t < T ? D[static_cast<int64_t>(bh) * T + t] : 0.0f;
  }
  FragAcc dQ[4], acc[4];
#pragma unroll
  for (int n = 0; n < 4; ++n) wmma::fill_fragment(dQ[n], 0.0f);
  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();
    LoadTile(Ks, base + C, rs, kt * kTile, T);
    LoadTile(Vs, base + 2 * C, rs, kt * kTile, T);
    __syncthreads();
    // S = Q K^T and dP = dO V^T for this warp's 16 queries.
    Product16x64<FragBCol>(acc, Qw, [&](int k, int n) { return Ks + n * kFrag * kLd + k * kFrag; });
    Store16x64(S, acc);
    Product16x64<FragBCol>(acc, dOw,
                           [&](int k, int n) { return Vs + n * kFrag * kLd + k * kFrag; });
    Store16x64(dP, acc);
    __syncwarp();
    for (int i = lane; i < kFrag * kTile; i += kWarpSize) {
      const int r = i / kTile, c = i % kTile, q = q0 + r, key = kt * kTile + c;
      const int w = warp * kFrag + r;
      const float p =
          key <= q && key < T && q < T ? exp2f(S[r * kLdf + c] * scale_log2 - lse_s[w]) : 0.0f;
      dS[r * kLd + c] = __float2bfloat16_rn(p * (dP[r * kLdf + c] - D_s[w]));
    }
    __syncwarp();
    // dQ += dS K (scaled at the end).
    Accumulate16x64<FragBRow>(dQ, dS,
                              [&](int k, int n) { return Ks + k * kFrag * kLd + n * kFrag; });
  }
  __syncwarp();
  Store16x64(S, dQ);
  __syncwarp();
  for (int i = lane; i < kFrag * kHs; i += kWarpSize) {
    const int r = i / kHs, c = i % kHs, q = q0 + r;
    if (q >= T) continue;
    bf16* row = dqkv + (static_cast<int64_t>(b) * T + q) * rs + h * kHs + c;
    *row = __float2bfloat16_rn(__bfloat162float(*row) + S[r * kLdf + c] * scale);
  }
}

constexpr std::size_t kForwardSmem =
    3 * kTileBytes + kWarps * (kWarpFloatBytes + kWarpBf16Bytes + sizeof(float) * kFrag * kHs);
constexpr std::size_t kBackwardKvSmem = 4 * kTileBytes +
                                        kWarps * (2 * kWarpFloatBytes + 2 * kWarpBf16Bytes) +
                                        2 * kTile * sizeof(float);
constexpr std::size_t kBackwardQSmem =
    4 * kTileBytes + kWarps * (2 * kWarpFloatBytes + kWarpBf16Bytes) + 2 * kTile * sizeof(float);

Status CheckShape(const char* op, int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0 || C <= 0 || NH <= 0) return ShapeError(op, "B, T, C, NH must be positive");
  if (C % NH != 0 || !FlashAttentionSupported(C / NH)) {
    return ShapeError(op, "head size " + std::to_string(C / NH) + " is not supported (64 is)");
  }
  if (static_cast<int64_t>(B) * NH > 65535) return ShapeError(op, "B * NH must be <= 65535");
  return Status::Ok();
}

// Opts a kernel into more than 48 KiB of dynamic shared memory (once per
// process and device is enough; repeating it is cheap).
template <class Kernel>
Status AllowSmem(Kernel kernel, std::size_t bytes) {
  KILN_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  return Status::Ok();
}

}  // namespace

bool FlashAttentionSupported(int head_size) { return head_size == kHs; }

std::size_t FlashAttentionBackwardScratchBytes(int B, int T, int NH) {
  return sizeof(float) * static_cast<std::size_t>(B) * NH * T;
}

Status FlashAttentionForward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("FlashAttentionForward", B, T, C, NH));
  KILN_RETURN_IF_ERROR(AllowSmem(FlashForwardKernel, kForwardSmem));
  const float scale_log2 = kLog2e / std::sqrt(static_cast<float>(kHs));
  const dim3 grid(static_cast<unsigned>(CeilDiv(T, kTile)), static_cast<unsigned>(B * NH));
  FlashForwardKernel<<<grid, kThreads, kForwardSmem, stream>>>(out, lse, qkv, T, C, NH, scale_log2);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status FlashAttentionBackward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* lse, int B, int T, int C, int NH, void* scratch,
                              std::size_t scratch_bytes, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("FlashAttentionBackward", B, T, C, NH));
  if (scratch == nullptr || scratch_bytes < FlashAttentionBackwardScratchBytes(B, T, NH)) {
    return ShapeError("FlashAttentionBackward", "scratch is too small");
  }
  KILN_RETURN_IF_ERROR(AllowSmem(FlashBackwardKvKernel, kBackwardKvSmem));
  KILN_RETURN_IF_ERROR(AllowSmem(FlashBackwardQKernel, kBackwardQSmem));
  float* D = static_cast<float*>(scratch);
  const int64_t rows = static_cast<int64_t>(B) * NH * T;
  RowDotKernel<<<static_cast<unsigned>(CeilDiv(rows, kWarps)), kThreads, 0, stream>>>(D, dout, out,
                                                                                      B, T, C, NH);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHs)), scale_log2 = scale * kLog2e;
  const dim3 grid(static_cast<unsigned>(CeilDiv(T, kTile)), static_cast<unsigned>(B * NH));
  FlashBackwardKvKernel<<<grid, kThreads, kBackwardKvSmem, stream>>>(dqkv, dout, qkv, lse, D, T, C,
                                                                     NH, scale, scale_log2);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  FlashBackwardQKernel<<<grid, kThreads, kBackwardQSmem, stream>>>(dqkv, dout, qkv, lse, D, T, C,
                                                                   NH, scale, scale_log2);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
