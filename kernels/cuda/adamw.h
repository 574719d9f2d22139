// AdamW on the GPU: one step over float master weights that also refreshes
// their bf16 copy. Conventions in kernels/cuda/precision.h; reference
// kernels/cpu/ops.h AdamW (same AdamWParams, decoupled weight decay, bias
// correction from the 1-based step). Thread-compatible: no state.
#ifndef KILN_KERNELS_CUDA_ADAMW_H_
#define KILN_KERNELS_CUDA_ADAMW_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// For i < n, with g = grads[i] * grad_scale (1 for none; the clipping factor
// when clipping): m, v and params[i] step as in cpu::AdamW, then
// params_bf16[i] = bf16(params[i]) unless params_bf16 is null.
Status AdamW(float* params, bf16* params_bf16, const float* grads, float* m, float* v, int64_t n,
             const cpu::AdamWParams& p, float grad_scale, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_ADAMW_H_
