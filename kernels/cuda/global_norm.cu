// kernels/cuda/global_norm.h.
#include <algorithm>

#include "kernels/cuda/global_norm.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;  // Also the thread count of the second stage.

__global__ void SquaresPartialKernel(float* partials, const float* x, int64_t n) {
  __shared__ float shared[kWarpSize];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  float sum = 0.0f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    sum += x[i] * x[i];
  }
  sum = BlockSum(sum, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// One block of kMaxBlocks threads; thread i holds partial i (or 0).
__global__ void SumPartialsKernel(float* norm, const float* partials, int count) {
  __shared__ double shared[kWarpSize];
  const double p =
      static_cast<int>(threadIdx.x) < count ? static_cast<double>(partials[threadIdx.x]) : 0.0;
  const double total = BlockSum(p, shared);
  if (threadIdx.x == 0) *norm = static_cast<float>(sqrt(total));
}

}  // namespace

std::size_t GlobalNormScratchFloats() { return kMaxBlocks; }

Status GlobalNorm(float* norm, const float* x, int64_t n, float* scratch, cudaStream_t stream) {
  if (n <= 0) return ShapeError("GlobalNorm", "n must be positive");
  if (scratch == nullptr) return ShapeError("GlobalNorm", "scratch is null");
  const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, CeilDiv(n, kThreads)));
  SquaresPartialKernel<<<blocks, kThreads, 0, stream>>>(scratch, x, n);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  SumPartialsKernel<<<1, kMaxBlocks, 0, stream>>>(norm, scratch, blocks);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
