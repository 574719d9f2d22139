// kernels/cuda/gelu.h: elementwise, kVec values per thread (16-byte accesses
// when every pointer allows), the last partial vector one value at a time.
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kCubic = 0.044715f;

__device__ __forceinline__ float Gelu(float x) {
  return 0.5f * x * (1.0f + tanhf(kGeluScale * (x + kCubic * x * x * x)));
}

__device__ __forceinline__ float GeluGrad(float x) {
  const float th = tanhf(kGeluScale * (x + kCubic * x * x * x));
  const float sech2 = 1.0f - th * th;
  return 0.5f * (1.0f + th) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * kCubic * x * x);
}

template <int kVec>
__global__ void GeluForwardKernel(bf16* out, const bf16* inp, int64_t n) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * kVec;
  if (i + kVec <= n) {
    float x[kVec];
    LoadBf16(x, inp + i);
#pragma unroll
    for (int k = 0; k < kVec; ++k) x[k] = Gelu(x[k]);
    StoreBf16(out + i, x);
  } else {
    for (int64_t j = i; j < n; ++j) out[j] = __float2bfloat16_rn(Gelu(__bfloat162float(inp[j])));
  }
}

template <int kVec>
__global__ void GeluBackwardKernel(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * kVec;
  if (i + kVec <= n) {
    float x[kVec], d[kVec], dx[kVec];
    LoadBf16(x, inp + i);
    LoadBf16(d, dout + i);
    LoadBf16(dx, dinp + i);
#pragma unroll
    for (int k = 0; k < kVec; ++k) dx[k] += GeluGrad(x[k]) * d[k];
    StoreBf16(dinp + i, dx);
  } else {
    for (int64_t j = i; j < n; ++j) {
      const float g = GeluGrad(__bfloat162float(inp[j])) * __bfloat162float(dout[j]);
      dinp[j] = __float2bfloat16_rn(__bfloat162float(dinp[j]) + g);
    }
  }
}

unsigned Blocks(int64_t n, int vec) {
  return static_cast<unsigned>(CeilDiv(CeilDiv(n, vec), kThreads));
}

}  // namespace

Status GeluForward(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream) {
  if (n <= 0) return ShapeError("GeluForward", "n must be positive");
  if (Aligned16(out) && Aligned16(inp)) {
    GeluForwardKernel<kBf16PerVector>
        <<<Blocks(n, kBf16PerVector), kThreads, 0, stream>>>(out, inp, n);
  } else {
    GeluForwardKernel<1><<<Blocks(n, 1), kThreads, 0, stream>>>(out, inp, n);
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status GeluBackward(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n, cudaStream_t stream) {
  if (n <= 0) return ShapeError("GeluBackward", "n must be positive");
  if (Aligned16(dinp) && Aligned16(inp) && Aligned16(dout)) {
    GeluBackwardKernel<kBf16PerVector>
        <<<Blocks(n, kBf16PerVector), kThreads, 0, stream>>>(dinp, inp, dout, n);
  } else {
    GeluBackwardKernel<1><<<Blocks(n, 1), kThreads, 0, stream>>>(dinp, inp, dout, n);
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
