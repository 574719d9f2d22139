// Internal to kernels/cuda: grid arithmetic, alignment tests and the bf16
// vector loads and stores the elementwise and row kernels share.
#ifndef KILN_KERNELS_CUDA_LAUNCH_CUH_
#define KILN_KERNELS_CUDA_LAUNCH_CUH_

#include <cstdint>
#include <string>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements per 16-byte bf16 vector access.
constexpr int kBf16PerVector = 8;

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// InvalidArgument naming the launcher: "<op>: <why>".
inline Status ShapeError(const char* op, const std::string& why) {
  return Status::InvalidArgument(std::string(op) + ": " + why);
}

// kVec consecutive bf16 values, aligned so that one access moves all of them
// (a 128-bit load or store for kVec = 8).
template <int kVec>
struct alignas(sizeof(bf16) * kVec) Bf16Vector {
  bf16 v[kVec];
};

// Loads kVec bf16 values from p (aligned to kVec * 2 bytes) as floats.
template <int kVec>
__device__ __forceinline__ void LoadBf16(float (&out)[kVec], const bf16* p) {
  const Bf16Vector<kVec> x = *reinterpret_cast<const Bf16Vector<kVec>*>(p);
#pragma unroll
  for (int k = 0; k < kVec; ++k) out[k] = __bfloat162float(x.v[k]);
}

// Rounds kVec floats to bf16 (nearest even) and stores them at p (aligned to
// kVec * 2 bytes).
template <int kVec>
__device__ __forceinline__ void StoreBf16(bf16* p, const float (&in)[kVec]) {
  Bf16Vector<kVec> x;
#pragma unroll
  for (int k = 0; k < kVec; ++k) x.v[k] = __float2bfloat16_rn(in[k]);
  *reinterpret_cast<Bf16Vector<kVec>*>(p) = x;
}

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_LAUNCH_CUH_
