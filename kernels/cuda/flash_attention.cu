// kernels/cuda/flash_attention.h. Each block works on one (batch, head) and
// one tile of queries (forward, query gradients: 128 rows, 8 warps) or keys
// (key and value gradients: 128 rows, 8 warps), each warp owning 16 rows. It
// walks the tiles of the other side (64 rows each) with a two-stage pipeline:
// while the tensor cores work on one tile, cp.async copies the next one from
// qkv's row layout [B, T, 3, NH, 64] into shared memory (rows past T zero).
// Tensor-core operands come from shared memory through ldmatrix, transposed
// on the fly (ldmatrix.trans) where a product reads a tile in the other
// orientation, so every tile is stored once, as it is in memory. The products
// run as mma.sync m16n8k16 (bf16 in, float accumulators in registers). A
// product's accumulator layout is the next product's A-operand layout, so
// scores become probabilities and gradients in registers: nothing of the
// T x T matrices touches shared or global memory. Scores are kept in log2
// units: s2 = (q . k) * scale * log2(e), so the softmax uses exp2 and
// lse = log2 sum 2^s2. Blocks are launched longest first (the causal mask
// makes the tiles' work uneven), and warps skip tiles that the mask hides
// from all their rows.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with bf16): lane = 4 g + t. A
// (16 x 16, row-major): registers {row g, cols 2t..2t+1}, {row g+8, same},
// {row g, cols 2t+8..}, {row g+8, cols 2t+8..}. B (16 x 8): {rows 2t..2t+1,
// col g}, {rows 2t+8.., col g}. C (16 x 8, float): {row g, cols 2t, 2t+1},
// {row g+8, same}. ldmatrix.x4 gives lane 4g + t, from each of four 8 x 8
// matrices (whose rows lanes 8m..8m+7 address), the pair {row g, cols 2t,
// 2t+1}; with .trans the pair {rows 2t, 2t+1 of col g}.
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
constexpr int kWarps = 8;  // Each owns 16 rows of the block's tile.
constexpr int kBlockRows = kWarps * 16;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kStep = 64;     // Rows of the other side per pipeline stage.
constexpr int kLd = kHs + 8;  // Shared-memory row stride (bf16): 144 bytes, so the
                              // 8 rows an ldmatrix reads fall in distinct banks.
constexpr float kLog2e = 1.4426950408889634f;
constexpr std::size_t kRowBytes = sizeof(bf16) * kLd;

// Copies rows [t0, t0 + kRows) x 64 columns from `src` (row t at src + t *
// row_stride) into dst [kRows][kLd] with 16-byte cp.async; rows at or past T
// are zero-filled. Completion: CommitCopies / WaitCopies.
template <int kRows>
__device__ __forceinline__ void CopyTile(bf16* dst, const bf16* src, int64_t row_stride, int t0,
                                         int T) {
  constexpr int kVecs = kHs / 8;
  for (int i = threadIdx.x; i < kRows * kVecs; i += kThreads) {
    const int r = i / kVecs, v = i % kVecs, t = t0 + r;
    const bf16* from = src + static_cast<int64_t>(t < T ? t : 0) * row_stride + v * 8;
    const auto to = static_cast<uint32_t>(__cvta_generic_to_shared(dst + r * kLd + v * 8));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(from),
                 "r"(t < T ? 16 : 0)
                 : "memory");
  }
}

__device__ __forceinline__ void CommitCopies() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void WaitCopies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void Ldsm(uint32_t (&r)[4], const bf16* p) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ void LdsmT(uint32_t (&r)[4], const bf16* p) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
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

// Each lane's offset (in bf16) into a tile for the three ldmatrix patterns.
struct LaneOffsets {
  int a;  // A operand: 16 rows x 16 columns at (row, col) + a.
  int b;  // B operand, the matrix's rows are B's columns: 16 of them x 16 k.
  int t;  // B operand read transposed: 16 k rows x 16 columns (B's columns).
  __device__ explicit LaneOffsets(int lane)
      : a((lane % 16) * kLd + (lane / 16) * 8),
        b(((lane / 16) * 8 + lane % 8) * kLd + ((lane / 8) % 2) * 8),
        t((((lane / 8) % 2) * 8 + lane % 8) * kLd + (lane / 16) * 8) {}
};

// A fragments of the 16 rows at `rows` (stride kLd), 64 columns: a[k]
// covers columns 16k..16k+15.
__device__ __forceinline__ void LoadA(uint32_t (&a)[4][4], const bf16* rows, const LaneOffsets& o) {
#pragma unroll
  for (int k = 0; k < 4; ++k) Ldsm(a[k], rows + 16 * k + o.a);
}

// acc (16 x 8 kCols, as kCols column blocks of 8) = a (16 x 64) * M^T, where
// M is 8 kCols rows x 64 columns in shared memory (stride kLd): B's column n
// is M's row n.
template <int kCols>
__device__ __forceinline__ void ProductT(float (&acc)[kCols][4], const uint32_t (&a)[4][4],
                                         const bf16* M, const LaneOffsets& o) {
#pragma unroll
  for (int n = 0; n < kCols; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
#pragma unroll
    for (int j = 0; j < kCols / 2; ++j) {
      uint32_t b[4];
      Ldsm(b, M + 16 * j * kLd + 16 * k + o.b);
      Mma(acc[2 * j], a[k], b[0], b[1]);
      Mma(acc[2 * j + 1], a[k], b[2], b[3]);
    }
  }
}

// acc (16 x 64) += p (16 x 8 kCols, accumulator layout, rounded to bf16) * M,
// where M is 8 kCols rows x 64 columns in shared memory (stride kLd), read
// transposed.
template <int kCols>
__device__ __forceinline__ void AccumulateFromAcc(float (&acc)[8][4], const float (&p)[kCols][4],
                                                  const bf16* M, const LaneOffsets& o) {
#pragma unroll
  for (int k = 0; k < kCols / 2; ++k) {
    const uint32_t a[4] = {Pack(p[2 * k][0], p[2 * k][1]), Pack(p[2 * k][2], p[2 * k][3]),
                           Pack(p[2 * k + 1][0], p[2 * k + 1][1]),
                           Pack(p[2 * k + 1][2], p[2 * k + 1][3])};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t b[4];
      LdsmT(b, M + 16 * k * kLd + 16 * j + o.t);
      Mma(acc[2 * j], a, b[0], b[1]);
      Mma(acc[2 * j + 1], a, b[2], b[3]);
    }
  }
}

// dst rows r_lo and r_lo + 8 (row r at dst + r * row_stride; rows at or past
// T skipped), columns 0..63, = acc (a warp's 16 x 64 accumulators) times
// factor_lo in row r_lo and factor_hi in row r_lo + 8.
__device__ __forceinline__ void StoreRows(bf16* dst, int64_t row_stride, int r_lo, int T,
                                          const float (&acc)[8][4], float factor_lo,
                                          float factor_hi, int t) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = r_lo + 8 * half;
    const float factor = half == 0 ? factor_lo : factor_hi;
    if (r >= T) continue;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      *reinterpret_cast<uint32_t*>(dst + r * row_stride + n * 8 + 2 * t) =
          Pack(acc[n][2 * half] * factor, acc[n][2 * half + 1] * factor);
    }
  }
}

// The pipeline step of the kernels that walk key tiles: once every warp is
// done with the stage that tile `next` goes to, starts copying K and V of
// tile `next` (when it exists) into it, then waits until the current tile's
// copies have landed and are visible to the whole block.
__device__ __forceinline__ void NextKeyTile(bf16* KV, const bf16* base, int64_t rs, int C, int next,
                                            int steps, int T) {
  __syncthreads();
  if (next < steps) {
    bf16* stage = KV + (next % 2) * 2 * kStep * kLd;
    CopyTile<kStep>(stage, base + C, rs, next * kStep, T);
    CopyTile<kStep>(stage + kStep * kLd, base + 2 * C, rs, next * kStep, T);
    CommitCopies();
    WaitCopies<1>();
  } else {
    WaitCopies<0>();
  }
  __syncthreads();
}

// The block's tile index, longest-running tiles first: for the forward and
// the query gradients the last query tile attends to the most keys.
__device__ __forceinline__ int LastFirst() { return gridDim.y - 1 - blockIdx.y; }

// Grid (B * NH, query tiles of 128). out [B, T, C], lse [B * NH, T].
__global__ void __launch_bounds__(kThreads, 2)
    FlashForwardKernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH,
                       float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // [128][kLd]
  bf16* KV = Qs + kBlockRows * kLd;          // 2 stages of K [64][kLd], V [64][kLd]
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH, q0 = LastFirst() * kBlockRows;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const LaneOffsets o(lane);
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const int w0 = q0 + warp * 16, q_lo = w0 + g, q_hi = q_lo + 8;  // This thread's two rows.
  const int steps = min(q0 + kBlockRows, T) / kStep + (min(q0 + kBlockRows, T) % kStep != 0);

  CopyTile<kBlockRows>(Qs, base, rs, q0, T);
  CopyTile<kStep>(KV, base + C, rs, 0, T);
  CopyTile<kStep>(KV + kStep * kLd, base + 2 * C, rs, 0, T);
  CommitCopies();
  uint32_t qa[4][4];
  float o_acc[8][4] = {}, s[8][4];
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
  for (int kt = 0; kt < steps; ++kt) {
    NextKeyTile(KV, base, rs, C, kt + 1, steps, T);
    if (kt == 0) LoadA(qa, Qs + warp * 16 * kLd, o);
    const int k0 = kt * kStep;
    if (k0 > w0 + 15) continue;  // Every key of the tile is after every row of the warp.
    const bf16* Ks = KV + (kt % 2) * 2 * kStep * kLd;
    ProductT(s, qa, Ks, o);
    // Scale, mask on the diagonal and past T, and the rows' maxima (each row
    // is spread over a quad).
    const bool masked = k0 + kStep - 1 > w0 || k0 + kStep > T;
    float max_lo = -INFINITY, max_hi = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = k0 + n * 8 + 2 * t + e;
        s[n][e] *= scale_log2;
        s[n][2 + e] *= scale_log2;
        if (masked) {
          if (key > q_lo || key >= T) s[n][e] = -INFINITY;
          if (key > q_hi || key >= T) s[n][2 + e] = -INFINITY;
        }
        max_lo = fmaxf(max_lo, s[n][e]);
        max_hi = fmaxf(max_hi, s[n][2 + e]);
      }
    }
#pragma unroll
    for (int x = 1; x < 4; x *= 2) {
      max_lo = fmaxf(max_lo, __shfl_xor_sync(kFullMask, max_lo, x));
      max_hi = fmaxf(max_hi, __shfl_xor_sync(kFullMask, max_hi, x));
    }
    // Finite: the warp's first row w0 >= k0 (both multiples of 16), so key
    // k0 (< T) is visible to every row of the warp.
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
        o_acc[n][e] *= alpha_lo;
        o_acc[n][2 + e] *= alpha_hi;
      }
    }
#pragma unroll
    for (int x = 1; x < 4; x *= 2) {
      sum_lo += __shfl_xor_sync(kFullMask, sum_lo, x);
      sum_hi += __shfl_xor_sync(kFullMask, sum_hi, x);
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
    m_lo = new_lo;
    m_hi = new_hi;
    // O += P V (P rounded to bf16 as the A operand).
    AccumulateFromAcc(o_acc, s, Ks + kStep * kLd, o);
  }
  StoreRows(out + static_cast<int64_t>(b) * T * C + h * kHs, C, q_lo, T, o_acc, 1.0f / l_lo,
            1.0f / l_hi, t);
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

// Grid (B * NH, key tiles of 128): dK and dV of the tile's keys, over the
// query tiles (64 rows) at or after its first key. Each warp holds, for a
// half tile of 32 queries at a time, S^T and P^T and then dP^T and dS^T of
// its 16 keys in registers; the key tile stays in shared memory.
__global__ void __launch_bounds__(kThreads, 2)
    FlashBackwardKvKernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                          const float* D, int T, int C, int NH, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);  // [128][kLd]
  bf16* Vs = Ks + kBlockRows * kLd;          // [128][kLd]
  bf16* QdO = Vs + kBlockRows * kLd;         // 2 stages of Q [64][kLd], dO [64][kLd]
  float* stats = reinterpret_cast<float*>(QdO + 4 * kStep * kLd);  // 2 stages of lse[64], D[64]
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH, k0 = blockIdx.y * kBlockRows;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const LaneOffsets o(lane);
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const bf16* dbase = dout + static_cast<int64_t>(b) * T * C + h * kHs;
  const float* lse_row = lse + static_cast<int64_t>(bh) * T;
  const float* D_row = D + static_cast<int64_t>(bh) * T;
  const int w0 = k0 + warp * 16, key_lo = w0 + g, key_hi = key_lo + 8;
  const int first = k0 / kStep, steps = (T + kStep - 1) / kStep - first;

  CopyTile<kBlockRows>(Ks, base + C, rs, k0, T);
  CopyTile<kBlockRows>(Vs, base + 2 * C, rs, k0, T);
  CopyTile<kStep>(QdO, base, rs, k0, T);
  CopyTile<kStep>(QdO + kStep * kLd, dbase, C, k0, T);
  CommitCopies();
  if (threadIdx.x < kStep) {
    const int q = k0 + threadIdx.x;
    stats[threadIdx.x] = q < T ? lse_row[q] : 0.0f;
    stats[kStep + threadIdx.x] = q < T ? D_row[q] : 0.0f;
  }
  float dk[8][4] = {}, dv[8][4] = {}, p[4][4], ds[4][4];
  for (int i = 0; i < steps; ++i) {
    const int q0 = (first + i) * kStep;
    __syncthreads();  // Every warp is done with the stage the next copy overwrites.
    float next_lse = 0.0f, next_D = 0.0f;
    if (i + 1 < steps) {
      bf16* next = QdO + ((i + 1) % 2) * 2 * kStep * kLd;
      CopyTile<kStep>(next, base, rs, q0 + kStep, T);
      CopyTile<kStep>(next + kStep * kLd, dbase, C, q0 + kStep, T);
      CommitCopies();
      if (threadIdx.x < kStep && q0 + kStep + threadIdx.x < T) {
        next_lse = lse_row[q0 + kStep + threadIdx.x];
        next_D = D_row[q0 + kStep + threadIdx.x];
      }
      WaitCopies<1>();
    } else {
      WaitCopies<0>();
    }
    __syncthreads();
    const bf16* Qs = QdO + (i % 2) * 2 * kStep * kLd;
    const bf16* dOs = Qs + kStep * kLd;
    const float* lse_s = stats + (i % 2) * 2 * kStep;
    const float* D_s = lse_s + kStep;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h0 = q0 + half * 32;  // The half tile's first query.
      if (h0 + 31 < w0) continue;     // Every query of it is before every key of the warp.
      uint32_t a[4][4];
      LoadA(a, Ks + warp * 16 * kLd, o);
      ProductT(p, a, Qs + half * 32 * kLd, o);  // S^T = K Q^T
      LoadA(a, Vs + warp * 16 * kLd, o);
      ProductT(ds, a, dOs + half * 32 * kLd, o);  // dP^T = V dO^T
#pragma unroll
      for (int n = 0; n < 4; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int c = half * 32 + n * 8 + 2 * t + e, q = q0 + c;
          const float l = lse_s[c], d = D_s[c];
          const float p_lo = key_lo <= q && q < T ? exp2f(p[n][e] * scale_log2 - l) : 0.0f;
          const float p_hi = key_hi <= q && q < T ? exp2f(p[n][2 + e] * scale_log2 - l) : 0.0f;
          p[n][e] = p_lo;
          p[n][2 + e] = p_hi;
          ds[n][e] = p_lo * (ds[n][e] - d);
          ds[n][2 + e] = p_hi * (ds[n][2 + e] - d);
        }
      }
      AccumulateFromAcc(dv, p, dOs + half * 32 * kLd, o);  // dV += P^T dO
      AccumulateFromAcc(dk, ds, Qs + half * 32 * kLd, o);  // dK += dS^T Q (scaled below)
    }
    if (threadIdx.x < kStep && i + 1 < steps) {
      float* next_stats = stats + ((i + 1) % 2) * 2 * kStep;
      next_stats[threadIdx.x] = next_lse;
      next_stats[kStep + threadIdx.x] = next_D;
    }
  }
  bf16* rows = dqkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  StoreRows(rows + C, rs, key_lo, T, dk, scale, scale, t);
  StoreRows(rows + 2 * C, rs, key_lo, T, dv, 1.0f, 1.0f, t);
}

// Grid (B * NH, query tiles of 128): dQ of the tile's queries, over the key
// tiles (64 rows) at or before its last query.
__global__ void __launch_bounds__(kThreads, 2)
    FlashBackwardQKernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                         const float* D, int T, int C, int NH, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // [128][kLd]
  bf16* dOs = Qs + kBlockRows * kLd;         // [128][kLd]
  bf16* KV = dOs + kBlockRows * kLd;         // 2 stages of K [64][kLd], V [64][kLd]
  const int bh = blockIdx.x, b = bh / NH, h = bh % NH, q0 = LastFirst() * kBlockRows;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const LaneOffsets o(lane);
  const int64_t rs = 3LL * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * rs + h * kHs;
  const bf16* dbase = dout + static_cast<int64_t>(b) * T * C + h * kHs;
  const int w0 = q0 + warp * 16, q_lo = w0 + g, q_hi = q_lo + 8;
  const int steps = min(q0 + kBlockRows, T) / kStep + (min(q0 + kBlockRows, T) % kStep != 0);

  CopyTile<kBlockRows>(Qs, base, rs, q0, T);
  CopyTile<kBlockRows>(dOs, dbase, C, q0, T);
  CopyTile<kStep>(KV, base + C, rs, 0, T);
  CopyTile<kStep>(KV + kStep * kLd, base + 2 * C, rs, 0, T);
  CommitCopies();
  const int64_t row0 = static_cast<int64_t>(bh) * T;
  const float lse_lo = q_lo < T ? lse[row0 + q_lo] : 0.0f,
              lse_hi = q_hi < T ? lse[row0 + q_hi] : 0.0f;
  const float d_lo = q_lo < T ? D[row0 + q_lo] : 0.0f, d_hi = q_hi < T ? D[row0 + q_hi] : 0.0f;
  uint32_t qa[4][4], doa[4][4];
  float dq[8][4] = {}, s[4][4], dp[4][4];
  for (int kt = 0; kt < steps; ++kt) {
    NextKeyTile(KV, base, rs, C, kt + 1, steps, T);
    if (kt == 0) {
      LoadA(qa, Qs + warp * 16 * kLd, o);
      LoadA(doa, dOs + warp * 16 * kLd, o);
    }
    const bf16* Ks = KV + (kt % 2) * 2 * kStep * kLd;
    const bf16* Vs = Ks + kStep * kLd;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h0 = kt * kStep + half * 32;     // The half tile's first key.
      if (h0 > w0 + 15) continue;                // Every key of it is after every row of the warp.
      ProductT(s, qa, Ks + half * 32 * kLd, o);  // S = Q K^T
      ProductT(dp, doa, Vs + half * 32 * kLd, o);  // dP = dO V^T
#pragma unroll
      for (int n = 0; n < 4; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = h0 + n * 8 + 2 * t + e;
          const float p_lo =
              key <= q_lo && key < T && q_lo < T ? exp2f(s[n][e] * scale_log2 - lse_lo) : 0.0f;
          const float p_hi =
              key <= q_hi && key < T && q_hi < T ? exp2f(s[n][2 + e] * scale_log2 - lse_hi) : 0.0f;
          s[n][e] = p_lo * (dp[n][e] - d_lo);  // dS
          s[n][2 + e] = p_hi * (dp[n][2 + e] - d_hi);
        }
      }
      AccumulateFromAcc(dq, s, Ks + half * 32 * kLd, o);  // dQ += dS K (scaled below)
    }
  }
  StoreRows(dqkv + static_cast<int64_t>(b) * T * rs + h * kHs, rs, q_lo, T, dq, scale, scale, t);
}

constexpr std::size_t kForwardSmem = (kBlockRows + 4 * kStep) * kRowBytes;
constexpr std::size_t kBackwardKvSmem =
    (2 * kBlockRows + 4 * kStep) * kRowBytes + 4 * kStep * sizeof(float);
constexpr std::size_t kBackwardQSmem = (2 * kBlockRows + 4 * kStep) * kRowBytes;

Status CheckShape(const char* op, int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0 || C <= 0 || NH <= 0) return ShapeError(op, "B, T, C, NH must be positive");
  if (C % NH != 0 || !FlashAttentionSupported(C / NH)) {
    return ShapeError(op, "head size " + std::to_string(C / NH) + " is not supported (64 is)");
  }
  if (CeilDiv(T, kBlockRows) > 65535) return ShapeError(op, "T must be <= 65535 * 128");
  if (static_cast<int64_t>(B) * NH > INT32_MAX) return ShapeError(op, "B * NH must fit in int32");
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
  const dim3 grid(static_cast<unsigned>(B * NH), static_cast<unsigned>(CeilDiv(T, kBlockRows)));
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
  const dim3 grid(static_cast<unsigned>(B * NH), static_cast<unsigned>(CeilDiv(T, kBlockRows)));
  FlashBackwardKvKernel<<<grid, kThreads, kBackwardKvSmem, stream>>>(dqkv, dout, qkv, lse, D, T, C,
                                                                     NH, scale, scale_log2);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  FlashBackwardQKernel<<<grid, kThreads, kBackwardQSmem, stream>>>(dqkv, dout, qkv, lse, D, T, C,
                                                                   NH, scale, scale_log2);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
