// kernels/cuda/flash_attention.h. Every kernel works on one (batch, head) and
// one 64-row tile of queries or keys, with 4 warps of 16 rows each. Tiles are
// copied from qkv's row layout [B, T, 3, NH, 64] into shared memory (rows past
// T zero; some also transposed, so every tensor-core operand is read as
// 32-bit pairs), and the products run as mma.sync m16n8k16 (bf16 in, float
// accumulators in registers). A product's accumulator layout is the next
// product's A-operand layout, so scores become probabilities and gradients in
// registers: nothing of the T x T matrices touches shared or global memory.
// Scores are kept in log2 units: s2 = (q . k) * scale * log2(e), so the
// softmax uses exp2 and lse = log2 sum 2^s2.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with bf16): lane = 4 g + t. A
// (16 x 16, row-major): registers {row g, cols 2t..2t+1}, {row g+8, same},
// {row g, cols 2t+8..}, {row g+8, cols 2t+8..}. B (16 x 8): {rows 2t..2t+1,
// col g}, {rows 2t+8.., col g}. C (16 x 8, float): {row g, cols 2t, 2t+1},
// {row g+8, same}.
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kHs = 64;    // Head size.
constexpr int kTile = 64;  // Query or key rows per block.
constexpr int kWarps = 4;  // Each owns 16 rows of the block's tile.
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kLd = kHs + 8;  // Shared-memory row stride (bf16): conflict-free pairs.
constexpr float kLog2e = 1.4426950408889634f;
constexpr std::size_t kTileBytes = sizeof(bf16) * kTile * kLd;

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

// The same tile transposed: dst [64 columns][kLd] holds column c of the tile
// as row c.
__device__ __forceinline__ void LoadTileTransposed(bf16* dst, const bf16* src, int64_t row_stride,
                                                   int t0, int T) {
  constexpr int kVecs = kHs / 8;
  for (int i = threadIdx.x; i < kTile * kVecs; i += kThreads) {
    const int r = i % kTile, v = i / kTile, t = t0 + r;
    uint4 x = make_uint4(0, 0, 0, 0);
    if (t < T) x = *reinterpret_cast<const uint4*>(src + t * row_stride + v * 8);
    const bf16* e = reinterpret_cast<const bf16*>(&x);
#pragma unroll
    for (int k = 0; k < 8; ++k) dst[(v * 8 + k) * kLd + r] = e[k];
  }
}

// Two consecutive bf16 at p (an even column), as one register.
__device__ __forceinline__ uint32_t Pair(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// c += a (16 x 16) * b (16 x 8).
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A fragments of the 16 rows at `rows` (row-major, stride kLd), 64 columns:
// a[k] covers columns 16k..16k+15.
__device__ __forceinline__ void LoadA(uint32_t (&a)[4][4], const bf16* rows, int g, int t) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    a[k][0] = Pair(rows + g * kLd + 16 * k + 2 * t);
    a[k][1] = Pair(rows + (g + 8) * kLd + 16 * k + 2 * t);
    a[k][2] = Pair(rows + g * kLd + 16 * k + 8 + 2 * t);
    a[k][3] = Pair(rows + (g + 8) * kLd + 16 * k + 8 + 2 * t);
  }
}

// acc (16 x 64, as 8 column blocks of 8) = a (16 x 64) * M^T, where M is 64
// rows x 64 columns row-major in shared memory: B's column n is M's row n.
__device__ __forceinline__ void ProductT(float (&acc)[8][4], const uint32_t (&a)[4][4],
                                         const bf16* M, int g, int t) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const bf16* row = M + (n * 8 + g) * kLd + 16 * k + 2 * t;
      Mma(acc[n], a[k], Pair(row), Pair(row + 8));
    }
  }
}

// acc += a (16 x 64, from accumulators: p[j] covers columns 8j..8j+7) * M,
// where Mt holds M (64 x 64) transposed: B's column n is Mt's row n.
__device__ __forceinline__ void AccumulateFromAcc(float (&acc)[8][4], const float (&p)[8][4],
                                                  const bf16* Mt, int g, int t) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t a[4] = {Pack(p[2 * k][0], p[2 * k][1]), Pack(p[2 * k][2], p[2 * k][3]),
                           Pack(p[2 * k + 1][0], p[2 * k + 1][1]),
                           Pack(p[2 * k + 1][2], p[2 * k + 1][3])};
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const bf16* row = Mt + (n * 8 + g) * kLd + 16 * k + 2 * t;
      Mma(acc[n], a, Pair(row), Pair(row + 8));
    }
  }
}

// dst rows r_lo and r_lo + 8 (row r at dst + r * row_stride; rows at or past
// T skipped), columns 0..63, += factor * acc (a warp's 16 x 64 accumulators).
__device__ __forceinline__ void AddRows(bf16* dst, int64_t row_stride, int r_lo, int T,
                                        const float (&acc)[8][4], float factor, int t) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = r_lo + 8 * half;
    if (r >= T) continue;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      bf16* x = dst + r * row_stride + n * 8 + 2 * t;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        x[e] = __float2bfloat16_rn(__bfloat162float(x[e]) + acc[n][2 * half + e] * factor);
      }
    }
  }
}

// Grid (query tiles, B * NH). out [B, T, C], lse [B * NH, T].
__global__ void __launch_bounds__(kThreads)
    FlashForwardKernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH,
                       float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = Qs + kTile * kLd;
  bf16* Vt = Ks + kTile * kLd;  // V transposed: [dim][key].
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const int q_lo = qt * kTile + warp * 16 + g, q_hi = q_lo + 8;  // This thread's two rows.

  LoadTile(Qs, base, rs, qt * kTile, T);
  __syncthreads();
  uint32_t qa[4][4];
  LoadA(qa, Qs + warp * 16 * kLd, g, t);
  float o[8][4] = {}, s[8][4];
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();  // Every warp is done with the previous K and V.
    LoadTile(Ks, base + C, rs, kt * kTile, T);
    LoadTileTransposed(Vt, base + 2 * C, rs, kt * kTile, T);
    __syncthreads();
    ProductT(s, qa, Ks, g, t);
    // Mask, scale, and the rows' maxima (each row is spread over a quad).
    float max_lo = -INFINITY, max_hi = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = kt * kTile + n * 8 + 2 * t + e;
        s[n][e] = key <= q_lo && key < T ? s[n][e] * scale_log2 : -INFINITY;
        s[n][2 + e] = key <= q_hi && key < T ? s[n][2 + e] * scale_log2 : -INFINITY;
        max_lo = fmaxf(max_lo, s[n][e]);
        max_hi = fmaxf(max_hi, s[n][2 + e]);
      }
    }
#pragma unroll
    for (int x = 1; x < 4; x *= 2) {
      max_lo = fmaxf(max_lo, __shfl_xor_sync(0xffffffffu, max_lo, x));
      max_hi = fmaxf(max_hi, __shfl_xor_sync(0xffffffffu, max_hi, x));
    }
    // Finite: key kt * 64 <= q for every row of a tile kt <= qt, and < T.
    const float new_lo = fmaxf(m_lo, max_lo), new_hi = fmaxf(m_hi, max_hi);
    const float alpha_lo = exp2f(m_lo - new_lo), alpha_hi = exp2f(m_hi - new_hi);
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[n][e] = exp2f(s[n][e] - new_lo);
        s[n][2 + e] = exp2f(s[n][2 + e] - new_hi);
        sum_lo += s[n][e];
        sum_hi += s[n][2 + e];
        o[n][e] *= alpha_lo;
        o[n][2 + e] *= alpha_hi;
      }
    }
#pragma unroll
    for (int x = 1; x < 4; x *= 2) {
      sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, x);
      sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, x);
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
    m_lo = new_lo;
    m_hi = new_hi;
    // O += P V (P rounded to bf16 as the A operand).
    AccumulateFromAcc(o, s, Vt, g, t);
  }
  const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    const int d = h * kHs + n * 8 + 2 * t;
    if (q_lo < T) {
      *reinterpret_cast<uint32_t*>(out + (static_cast<int64_t>(b) * T + q_lo) * C + d) =
          Pack(o[n][0] * inv_lo, o[n][1] * inv_lo);
    }
    if (q_hi < T) {
      *reinterpret_cast<uint32_t*>(out + (static_cast<int64_t>(b) * T + q_hi) * C + d) =
          Pack(o[n][2] * inv_hi, o[n][3] * inv_hi);
    }
  }
  if (t == 0) {
    if (q_lo < T) lse[static_cast<int64_t>(bh) * T + q_lo] = m_lo + log2f(l_lo);
    if (q_hi < T) lse[static_cast<int64_t>(bh) * T + q_hi] = m_hi + log2f(l_hi);
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
// tiles at or after it. Each warp holds S^T, P^T, dP^T and dS^T of its 16 keys
// by the 64 queries of a tile in registers.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardKvKernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                          const float* D, int T, int C, int NH, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = Ks + kTile * kLd;
  bf16* Qs = Vs + kTile * kLd;   // [query][dim]
  bf16* dOs = Qs + kTile * kLd;  // [query][dim]
  bf16* Qt = dOs + kTile * kLd;  // [dim][query]
  bf16* dOt = Qt + kTile * kLd;  // [dim][query]
  float* lse_s = reinterpret_cast<float*>(dOt + kTile * kLd);
  float* D_s = lse_s + kTile;
  const int kt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const bf16* dbase = dout + static_cast<int64_t>(b) * T * C + h * kHs;
  const int key_lo = kt * kTile + warp * 16 + g, key_hi = key_lo + 8;
  const int tiles = (T + kTile - 1) / kTile;

  LoadTile(Ks, base + C, rs, kt * kTile, T);
  LoadTile(Vs, base + 2 * C, rs, kt * kTile, T);
  __syncthreads();
  uint32_t ka[4][4], va[4][4];
  LoadA(ka, Ks + warp * 16 * kLd, g, t);
  LoadA(va, Vs + warp * 16 * kLd, g, t);
  float dk[8][4] = {}, dv[8][4] = {}, p[8][4], ds[8][4];
  for (int qt = kt; qt < tiles; ++qt) {
    __syncthreads();
    LoadTile(Qs, base, rs, qt * kTile, T);
    LoadTile(dOs, dbase, C, qt * kTile, T);
    LoadTileTransposed(Qt, base, rs, qt * kTile, T);
    LoadTileTransposed(dOt, dbase, C, qt * kTile, T);
    for (int i = threadIdx.x; i < kTile; i += kThreads) {
      const int q = qt * kTile + i;
      lse_s[i] = q < T ? lse[static_cast<int64_t>(bh) * T + q] : 0.0f;
      D_s[i] = q < T ? D[static_cast<int64_t>(bh) * T + q] : 0.0f;
    }
    __syncthreads();
    ProductT(p, ka, Qs, g, t);    // S^T = K Q^T
    ProductT(ds, va, dOs, g, t);  // dP^T = V dO^T
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = n * 8 + 2 * t + e, q = qt * kTile + c;
        const float l = lse_s[c], d = D_s[c];
        const float p_lo = key_lo <= q && q < T ? exp2f(p[n][e] * scale_log2 - l) : 0.0f;
        const float p_hi = key_hi <= q && q < T ? exp2f(p[n][2 + e] * scale_log2 - l) : 0.0f;
        p[n][e] = p_lo;
        p[n][2 + e] = p_hi;
        ds[n][e] = p_lo * (ds[n][e] - d);
        ds[n][2 + e] = p_hi * (ds[n][2 + e] - d);
      }
    }
    AccumulateFromAcc(dv, p, dOt, g, t);  // dV += P^T dO
    AccumulateFromAcc(dk, ds, Qt, g, t);  // dK += dS^T Q (scaled below)
  }
  bf16* rows = dqkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  AddRows(rows + C, rs, key_lo, T, dk, scale, t);
  AddRows(rows + 2 * C, rs, key_lo, T, dv, 1.0f, t);
}

// Grid (query tiles, B * NH): dQ of the tile's 64 queries, over the key
// tiles at or before it.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardQKernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                         const float* D, int T, int C, int NH, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* dOs = Qs + kTile * kLd;
  bf16* Ks = dOs + kTile * kLd;  // [key][dim]
  bf16* Vs = Ks + kTile * kLd;   // [key][dim]
  bf16* Kt = Vs + kTile * kLd;   // [dim][key]
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const bf16* dbase = dout + static_cast<int64_t>(b) * T * C + h * kHs;
  const int q_lo = qt * kTile + warp * 16 + g, q_hi = q_lo + 8;

  LoadTile(Qs, base, rs, qt * kTile, T);
  LoadTile(dOs, dbase, C, qt * kTile, T);
  __syncthreads();
  uint32_t qa[4][4], doa[4][4];
  LoadA(qa, Qs + warp * 16 * kLd, g, t);
  LoadA(doa, dOs + warp * 16 * kLd, g, t);
  const int64_t row0 = static_cast<int64_t>(bh) * T;
  const float lse_lo = q_lo < T ? lse[row0 + q_lo] : 0.0f,
              lse_hi = q_hi < T ? lse[row0 + q_hi] : 0.0f;
  const float d_lo = q_lo < T ? D[row0 + q_lo] : 0.0f, d_hi = q_hi < T ? D[row0 + q_hi] : 0.0f;
  float dq[8][4] = {}, s[8][4], dp[8][4];
  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();
    LoadTile(Ks, base + C, rs, kt * kTile, T);
    LoadTile(Vs, base + 2 * C, rs, kt * kTile, T);
    LoadTileTransposed(Kt, base + C, rs, kt * kTile, T);
    __syncthreads();
    ProductT(s, qa, Ks, g, t);    // S = Q K^T
    ProductT(dp, doa, Vs, g, t);  // dP = dO V^T
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = kt * kTile + n * 8 + 2 * t + e;
        const float p_lo =
            key <= q_lo && key < T && q_lo < T ? exp2f(s[n][e] * scale_log2 - lse_lo) : 0.0f;
        const float p_hi =
            key <= q_hi && key < T && q_hi < T ? exp2f(s[n][2 + e] * scale_log2 - lse_hi) : 0.0f;
        s[n][e] = p_lo * (dp[n][e] - d_lo);  // dS
        s[n][2 + e] = p_hi * (dp[n][2 + e] - d_hi);
      }
    }
    AccumulateFromAcc(dq, s, Kt, g, t);  // dQ += dS K (scaled below)
  }
  AddRows(dqkv + static_cast<int64_t>(b) * T * rs + h * kHs, rs, q_lo, T, dq, scale, t);
}

constexpr std::size_t kForwardSmem = 3 * kTileBytes;
constexpr std::size_t kBackwardKvSmem = 6 * kTileBytes + 2 * kTile * sizeof(float);
constexpr std::size_t kBackwardQSmem = 5 * kTileBytes;

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
