// GELU (tanh approximation, as GPT-2) on the GPU and its backward.
// Conventions in kernels/cuda/precision.h; reference kernels/cpu/ops.h
// GeluForward/GeluBackward. Thread-compatible: the functions keep no state.
#ifndef KILN_KERNELS_CUDA_GELU_H_
#define KILN_KERNELS_CUDA_GELU_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// out[i] = gelu(inp[i]) for n values; out may alias inp.
Status GeluForward(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream);

// dinp[i] += gelu'(inp[i]) * dout[i]; dinp must not alias dout or inp.
Status GeluBackward(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_GELU_H_
