// float32 to bf16 on the GPU: the bf16 copy of the parameters that the
// training forward and backward read, and the serving decoder's weights.
// Rounds to nearest even (__float2bfloat16_rn); reference
// kernels/cpu/matmul_bf16.h FloatToBf16. Thread-compatible: the functions
// keep no state.
#ifndef KILN_KERNELS_CUDA_CONVERT_H_
#define KILN_KERNELS_CUDA_CONVERT_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// out[i] = bf16(in[i]) for n values.
Status FloatToBf16(bf16* out, const float* in, int64_t n, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_CONVERT_H_
