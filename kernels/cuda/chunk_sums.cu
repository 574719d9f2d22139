// kernels/cuda/chunk_sums.h: the second stage of the column sums.
#include "kernels/cuda/chunk_sums.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per column; consecutive threads read consecutive columns.
__global__ void AddChunkSumsKernel(float* out, const float* partials, int chunks, int width,
                                   int64_t stride) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= width) return;
  float sum = 0.0f;
  for (int k = 0; k < chunks; ++k) sum += partials[k * stride + j];
  out[j] += sum;
}

}  // namespace

Status AddChunkSums(float* out, const float* partials, int chunks, int width, int64_t stride,
                    cudaStream_t stream) {
  if (chunks <= 0 || width <= 0 || stride < width) {
    return ShapeError("AddChunkSums", "needs chunks > 0, width > 0 and stride >= width");
  }
  const auto blocks = static_cast<unsigned>(CeilDiv(width, kThreads));
  AddChunkSumsKernel<<<blocks, kThreads, 0, stream>>>(out, partials, chunks, width, stride);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
