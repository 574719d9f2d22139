// kernels/cuda/gather.h: one block per output row.
#include <algorithm>

#include "kernels/cuda/gather.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

__global__ void GatherRowsKernel(bf16* out, const bf16* in, const int32_t* rows, int C) {
  const int s = blockIdx.x;
  const bf16* src = in + static_cast<int64_t>(rows[s]) * C;
  for (int i = threadIdx.x; i < C; i += blockDim.x) out[static_cast<int64_t>(s) * C + i] = src[i];
}

}  // namespace

Status GatherRows(bf16* out, const bf16* in, const int32_t* rows, int n, int C,
                  cudaStream_t stream) {
  if (n <= 0 || C <= 0) return ShapeError("GatherRows", "n and C must be positive");
  const auto threads = static_cast<unsigned>(std::min(256, ((C + 31) / 32) * 32));
  GatherRowsKernel<<<static_cast<unsigned>(n), threads, 0, stream>>>(out, in, rows, C);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
