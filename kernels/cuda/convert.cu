// kernels/cuda/convert.h: one value per thread.
#include "kernels/cuda/convert.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void FloatToBf16Kernel(bf16* out, const float* in, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

}  // namespace

Status FloatToBf16(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  if (n <= 0) return ShapeError("FloatToBf16", "n must be positive");
  FloatToBf16Kernel<<<static_cast<unsigned>(CeilDiv(n, kThreads)), kThreads, 0, stream>>>(out, in,
                                                                                          n);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
